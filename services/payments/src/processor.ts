// A simulated card processor: pure, answering by card number.
//
// The test cards follow the well-known convention (DESIGN.md), so demos and
// the saga's compensation path can be driven from a request alone:
//
//   4242424242424242  charged
//   4000000000000002  declined: card_declined
//   4000000000009995  declined: insufficient_funds
//   4000000000000119  processor unavailable (transient; a retry runs again)
//   any other valid number: charged

export type Decision =
  | { readonly outcome: "charged" }
  | { readonly outcome: "declined"; readonly reason: string }
  | { readonly outcome: "unavailable" };

export const TEST_CARDS = {
  charged: "4242424242424242",
  declined: "4000000000000002",
  insufficientFunds: "4000000000009995",
  processorError: "4000000000000119",
} as const;

const DECISIONS: ReadonlyMap<string, Decision> = new Map<string, Decision>([
  [TEST_CARDS.declined, { outcome: "declined", reason: "card_declined" }],
  [TEST_CARDS.insufficientFunds, { outcome: "declined", reason: "insufficient_funds" }],
  [TEST_CARDS.processorError, { outcome: "unavailable" }],
]);

const CHARGED: Decision = { outcome: "charged" };

/** What the processor says about charging `cardNumber` (already validated). */
export function authorize(cardNumber: string): Decision {
  return DECISIONS.get(cardNumber) ?? CHARGED;
}
