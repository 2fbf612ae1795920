// Domain errors of the payments service; service.ts maps each to one gRPC
// status, so the domain never imports gRPC and no client sees UNKNOWN.
//
// PaymentsError            base class, never thrown itself
// ├── InvalidArgument      a request field is wrong          -> INVALID_ARGUMENT (+ BadRequest detail)
// ├── NotFound             no payment has that id            -> NOT_FOUND
// ├── FailedPrecondition   key reused for another request,
// │                        a Charge with a retired key,
// │                        ResolveCharge of a Refund's key,
// │                        or refund of a declined payment   -> FAILED_PRECONDITION
// └── Unavailable          the card processor failed for now;
//                          nothing was stored, retry is safe  -> UNAVAILABLE
//
// Anything else that escapes a handler is a bug: it becomes INTERNAL.

/** Base of every error the payments service reports to a caller. */
export class PaymentsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A request field is malformed; `field` is its path in the contract (`card.cvc`). */
export class InvalidArgument extends PaymentsError {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
  }
}

export class NotFound extends PaymentsError {}

export class FailedPrecondition extends PaymentsError {}

export class Unavailable extends PaymentsError {}
