// gRPC face of the payments domain: protobuf in, domain call, protobuf out.
//
// Thin on purpose: every handler is the same wrapper around one domain call,
// which (1) injects the configured faults, (2) maps each domain error to its
// status code, and (3) turns anything else into INTERNAL "internal error",
// logged with its stack, because grpc-js would otherwise send UNKNOWN with the
// exception's message. Handlers always `return callback(...)`, exactly once.
//
// OpenTelemetry's grpc-js instrumentation wraps these handlers from outside,
// so the server span covers the injected delay and records the final status
// code that the callback reports.

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
import type { FaultConfig } from "./config";
import type { ChargeInput, Payment, PaymentStatus, PaymentsApi } from "./domain";
import { FailedPrecondition, InvalidArgument, NotFound, PaymentsError, Unavailable } from "./errors";
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
  readonly faults: FaultConfig;
  /** Uniform in [0, 1); tests pass their own to make injected errors certain. */
  readonly random?: () => number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function unary<Request, Response>(
  method: string,
  options: ServiceOptions,
  body: (request: Request) => Response | Promise<Response>,
): grpc.handleUnaryCall<Request, Response> {
  const random = options.random ?? Math.random;
  const { delayMs, errorPercent } = options.faults;

  type Outcome = { readonly error: grpc.ServerErrorResponse } | { readonly error: null; readonly response: Response };

  async function outcome(request: Request): Promise<Outcome> {
    try {
      if (delayMs > 0) {
        await sleep(delayMs);
      }
      if (errorPercent > 0 && random() * 100 < errorPercent) {
        return { error: statusError(grpc.status.UNAVAILABLE, `injected fault in ${method}`) };
      }
      return { error: null, response: await body(request) };
    } catch (error) {
      return { error: toStatusError(error, method) };
    }
  }

  return (call, callback) => {
    log.debug("call started", { method });
    // The callback is called outside the try above: were it to throw,
    // catching that and calling it a second time would be worse.
    outcome(call.request)
      .then((result) => {
        if (result.error !== null) {
          return callback(result.error);
        }
        return callback(null, result.response);
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
