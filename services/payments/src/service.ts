// gRPC face of the payments domain: protobuf in, domain call, protobuf out.
//
// Thin on purpose: every handler is the same wrapper around one domain call,
// which (1) injects the fault rule in force (faults.ts: the fault file's, or
// FAULT_*'s), (2) maps each domain error to its status code, and (3) turns
// anything else into INTERNAL "internal error", logged with its stack,
// because grpc-js would otherwise send UNKNOWN with the exception's message.
// Every call is answered exactly once.
//
// OpenTelemetry's grpc-js instrumentation wraps these handlers from outside,
// so the server span covers the injected delay and records the final status
// code that the callback reports.
//
// A call whose deadline passes or whose caller cancels it stops at once (see
// `unary`): the injected delay ends early, and no domain call starts after the
// caller gave up, so a Charge nobody waits for any more is never made.

import { performance } from "node:perf_hooks";
import { setTimeout as delay } from "node:timers/promises";

import * as grpc from "@grpc/grpc-js";

import {
  type ChargeRequest,
  type ChargeResponse,
  type GetPaymentRequest,
  type GetPaymentResponse,
  type Payment as PaymentMessage,
  type PaymentsServiceServer,
  PaymentsServiceService,
  PaymentStatus as PaymentStatusMessage,
  type RefundRequest,
  type RefundResponse,
  type ResolveChargeRequest,
  type ResolveChargeResponse,
} from "../../../gen/ts/shop/payments/v1/payments";
import type { ChargeInput, Payment, PaymentStatus, PaymentsApi } from "./domain";
import { FailedPrecondition, InvalidArgument, NotFound, PaymentsError, Unavailable } from "./errors";
import type { FaultSource } from "./faults";
import { log } from "./logging";
import { encodeInvalidArgumentStatus, STATUS_DETAILS_KEY } from "./rpc-status";

export const SERVICE_FULL_NAME = "shop.payments.v1.PaymentsService";

const STATUS_TO_MESSAGE: Readonly<Record<PaymentStatus, PaymentStatusMessage>> = {
  CHARGED: PaymentStatusMessage.PAYMENT_STATUS_CHARGED,
  DECLINED: PaymentStatusMessage.PAYMENT_STATUS_DECLINED,
  REFUNDED: PaymentStatusMessage.PAYMENT_STATUS_REFUNDED,
};

export function paymentToMessage(payment: Payment): PaymentMessage {
  return {
    id: payment.id,
    orderId: payment.orderId,
    amount: { currencyCode: payment.amount.currencyCode, amountMinor: payment.amount.amountMinor },
    status: STATUS_TO_MESSAGE[payment.status],
    declineReason: payment.declineReason,
    cardLast4: payment.cardLast4,
    createTime: payment.createTime,
  };
}

function chargeInput(request: ChargeRequest): ChargeInput {
  const { amount, card } = request;
  return {
    idempotencyKey: request.idempotencyKey,
    orderId: request.orderId,
    amount: amount && { currencyCode: amount.currencyCode, amountMinor: amount.amountMinor },
    card: card && {
      number: card.number,
      expiryMonth: card.expiryMonth,
      expiryYear: card.expiryYear,
      cvc: card.cvc,
      holderName: card.holderName,
    },
  };
}

/** An Error carrying a status, the shape grpc-js (and the instrumentation) read. */
function statusError(code: grpc.status, details: string, metadata?: grpc.Metadata): grpc.ServerErrorResponse {
  return Object.assign(new Error(details), { code, details, metadata: metadata ?? new grpc.Metadata() });
}

function invalidArgument(error: InvalidArgument): grpc.ServerErrorResponse {
  const metadata = new grpc.Metadata();
  const status = encodeInvalidArgumentStatus(error.message, error.field, error.problem);
  metadata.set(STATUS_DETAILS_KEY, Buffer.from(status));
  return statusError(grpc.status.INVALID_ARGUMENT, error.message, metadata);
}

/** The status a caller gets for `error`; only PaymentsError subclasses say more than "internal error". */
export function toStatusError(error: unknown, method: string): grpc.ServerErrorResponse {
  if (error instanceof InvalidArgument) {
    return invalidArgument(error);
  }
  if (error instanceof NotFound) {
    return statusError(grpc.status.NOT_FOUND, error.message);
  }
  if (error instanceof FailedPrecondition) {
    return statusError(grpc.status.FAILED_PRECONDITION, error.message);
  }
  if (error instanceof Unavailable) {
    return statusError(grpc.status.UNAVAILABLE, error.message);
  }
  if (error instanceof PaymentsError) {
    log.error(`unmapped payments error in ${method}`, error);
  } else {
    log.error(`unhandled error in ${method}`, error);
  }
  return statusError(grpc.status.INTERNAL, "internal error");
}

export interface ServiceOptions {
  /** The fault rule of each call, looked up as it starts (faults.ts). */
  readonly faults: FaultSource;
  /** Uniform in [0, 1); tests pass their own to make injected errors certain. */
  readonly random?: () => number;
}

/**
 * grpc-js arms its deadline timer and computes `getDeadline()` from two
 * readings of the clock, and a Node timer may fire a few milliseconds before
 * Date.now() reaches its due time (libuv's cached loop time): a cancellation
 * this close to the deadline is the deadline's.
 */
const DEADLINE_SLACK_MS = 25;

/** Epoch milliseconds at which the call's deadline passes; Infinity without one. */
function deadlineMs(deadline: grpc.Deadline): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

/** How a call that ended before its status was sent ended: its deadline passed, or it was cancelled. */
export function endedBy(deadline: grpc.Deadline): grpc.status.DEADLINE_EXCEEDED | grpc.status.CANCELLED {
  return Date.now() + DEADLINE_SLACK_MS >= deadlineMs(deadline) ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED;
}

/** Waits `ms`; false when `signal` ended the wait first. */
async function waited(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await delay(ms, undefined, { signal });
    return true;
  } catch (error) {
    if (signal.aborted) {
      return false;
    }
    throw error;
  }
}

function unary<Request, Response>(
  method: string,
  options: ServiceOptions,
  body: (request: Request) => Response | Promise<Response>,
): grpc.handleUnaryCall<Request, Response> {
  const random = options.random ?? Math.random;

  type Outcome = { readonly error: grpc.ServerErrorResponse } | { readonly error: null; readonly response: Response };

  /** The call's outcome, or null when it was cancelled before the domain call started. */
  async function outcome(request: Request, signal: AbortSignal): Promise<Outcome | null> {
    try {
      // Looked up as the call starts: a rule switched while it waits does not change it.
      const rule = options.faults.ruleFor(method);
      if (rule !== null && rule.delayMs > 0 && !(await waited(rule.delayMs, signal))) {
        return null;
      }
      // The last point at which stopping is free: past it, a charge may be
      // made. One made while its caller leaves is kept under its idempotency
      // key, where a retry or ResolveCharge finds it.
      if (signal.aborted) {
        return null;
      }
      if (rule !== null && rule.errorRatio > 0 && random() < rule.errorRatio) {
        return { error: statusError(rule.errorCode, `injected fault in ${method}`) };
      }
      return { error: null, response: await body(request) };
    } catch (error) {
      return { error: toStatusError(error, method) };
    }
  }

  return (call, callback) => {
    const started = performance.now();
    const controller = new AbortController();
    let answered = false;
    const answer: grpc.sendUnaryData<Response> = (...args) => {
      if (!answered) {
        answered = true;
        callback(...args);
      }
    };
    log.debug("call started", { method });
    // grpc-js emits 'cancelled' when the caller cancels, when the deadline
    // passes (it has then sent DEADLINE_EXCEEDED itself), when a forced
    // shutdown ends the call, and also after every status it sends, ours
    // included: `answered` tells the last apart.
    call.on("cancelled", () => {
      if (answered) {
        return;
      }
      const deadlinePassed = endedBy(call.getDeadline()) === grpc.status.DEADLINE_EXCEEDED;
      log.info("call cancelled", {
        method,
        after_ms: Math.round(performance.now() - started),
        deadline_passed: deadlinePassed,
      });
      controller.abort();
      // The call has ended: grpc-js drops this status and the caller keeps the
      // one it has. Answering still ends the OpenTelemetry server span (only
      // the callback ends a unary one) with the reason, and frees the call's
      // place under the concurrency limit at once.
      const code = deadlinePassed ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED;
      answer(statusError(code, deadlinePassed ? "deadline exceeded" : "call cancelled"));
    });
    // The callback is called outside the try above: were it to throw,
    // catching that and calling it a second time would be worse.
    outcome(call.request, controller.signal)
      .then((result) => {
        if (result === null) {
          return;
        }
        if (controller.signal.aborted) {
          log.debug("call finished after it was cancelled", { method, failed: result.error !== null });
          return;
        }
        if (result.error !== null) {
          return answer(result.error);
        }
        return answer(null, result.response);
      })
      .catch((error: unknown) => log.error(`cannot send the response of ${method}`, error));
  };
}

/** The PaymentsService implementation over `api`, ready for `server.addService`. */
export function paymentsService(api: PaymentsApi, options: ServiceOptions): PaymentsServiceServer {
  const path = PaymentsServiceService;
  return {
    charge: unary<ChargeRequest, ChargeResponse>(path.charge.path, options, async (request) => ({
      payment: paymentToMessage(await api.charge(chargeInput(request))),
    })),
    refund: unary<RefundRequest, RefundResponse>(path.refund.path, options, async (request) => ({
      payment: paymentToMessage(
        await api.refund({ idempotencyKey: request.idempotencyKey, paymentId: request.paymentId, reason: request.reason }),
      ),
    })),
    getPayment: unary<GetPaymentRequest, GetPaymentResponse>(path.getPayment.path, options, async (request) => ({
      payment: paymentToMessage(await api.getPayment(request.id)),
    })),
    resolveCharge: unary<ResolveChargeRequest, ResolveChargeResponse>(
      path.resolveCharge.path,
      options,
      async (request) => {
        // Unset when no charge was made: the key is retired, and none ever will be.
        const payment = await api.resolveCharge(request.idempotencyKey);
        return { payment: payment === undefined ? undefined : paymentToMessage(payment) };
      },
    ),
  };
}
