// Card validation: pure functions of the card and the current time.
//
// Checks run in the order the contract lists the fields and the first problem
// is reported, so a client fixing one field at a time converges. Field names
// are the contract's (snake_case paths), as they appear in the BadRequest
// detail a client reads.

import { InvalidArgument } from "./errors";

/** The card fields of a charge, as the domain sees them. */
export interface CardInput {
  readonly number: string;
  readonly expiryMonth: number;
  readonly expiryYear: number;
  readonly cvc: string;
  readonly holderName: string;
}

/** Luhn (mod 10) check of a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i -= 1) {
    let digit = digits.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) {
      return false;
    }
    if (double) {
      digit *= 2;
      if (digit > 9) {
        digit -= 9;
      }
    }
    sum += digit;
    double = !double;
  }
  return digits.length > 0 && sum % 10 === 0;
}

/**
 * Throws InvalidArgument for the first problem with `card` (a missing card
 * included); `now` decides expiry. A card is valid through the last moment of
 * its expiry month in UTC, the usual convention of card networks.
 */
export function validateCard(card: CardInput | undefined, now: Date): asserts card is CardInput {
  if (card === undefined) {
    throw new InvalidArgument("card", "is required");
  }
  if (card.number === "") {
    throw new InvalidArgument("card.number", "is required");
  }
  if (!/^[0-9]{12,19}$/.test(card.number)) {
    throw new InvalidArgument("card.number", "must be 12 to 19 digits with no spaces or other characters");
  }
  if (!luhnValid(card.number)) {
    throw new InvalidArgument("card.number", "fails the Luhn check");
  }
  if (!Number.isInteger(card.expiryMonth) || card.expiryMonth < 1 || card.expiryMonth > 12) {
    throw new InvalidArgument("card.expiry_month", "must be between 1 and 12");
  }
  if (!Number.isInteger(card.expiryYear) || card.expiryYear < 1000 || card.expiryYear > 9999) {
    throw new InvalidArgument("card.expiry_year", "must be four digits");
  }
  const year = now.getUTCFullYear();
  const month = now.getUTCMonth() + 1;
  if (card.expiryYear < year) {
    throw new InvalidArgument("card.expiry_year", "the card has expired");
  }
  if (card.expiryYear === year && card.expiryMonth < month) {
    throw new InvalidArgument("card.expiry_month", "the card has expired");
  }
  if (!/^[0-9]{3,4}$/.test(card.cvc)) {
    throw new InvalidArgument("card.cvc", "must be 3 or 4 digits");
  }
}

/** The only part of a card number the service keeps. */
export function last4(number: string): string {
  return number.slice(-4);
}
