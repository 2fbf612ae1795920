"""gRPC face of the notifications service: protobuf in, domain call, protobuf out.

ListNotifications maps domain errors through `notifications.errors.STATUSES`.
StreamNotifications is server streaming, which `maps_errors` does not wrap,
so it checks its request and ends its stream itself, through the same table.
Both pass the caller's subject (`mesh.identity`, from the gateway) to the
domain, which refuses a request about another customer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import timestamp_pb2

from mesh.identity import subject
from mesh.status import Context, abort_for, maps_errors
from notifications.broadcast import SubscriptionEnded
from notifications.domain import Kind, Notification, Notifications, check_stream_request
from notifications.errors import STATUSES, InvalidArgument, NotYourCustomer
from shop.notifications.v1 import notifications_pb2, notifications_pb2_grpc

_KINDS = {
    Kind.ORDER_CONFIRMED: notifications_pb2.NOTIFICATION_KIND_ORDER_CONFIRMED,
    Kind.ORDER_CANCELLED: notifications_pb2.NOTIFICATION_KIND_ORDER_CANCELLED,
}


def notification_to_proto(notification: Notification) -> notifications_pb2.Notification:
    create_time = timestamp_pb2.Timestamp()
    create_time.FromDatetime(notification.create_time)
    return notifications_pb2.Notification(
        id=notification.id,
        customer_id=notification.customer_id,
        email=notification.email,
        order_id=notification.order_id,
        kind=_KINDS[notification.kind],
        subject=notification.subject,
        body=notification.body,
        source_event_id=notification.source_event_id,
        create_time=create_time,
    )


class NotificationsServicer(notifications_pb2_grpc.NotificationsServiceServicer):
    def __init__(self, notifications: Notifications) -> None:
        self._notifications = notifications

    @maps_errors(STATUSES)
    async def ListNotifications(  # noqa: N802 (name fixed by the contract)
        self, request: notifications_pb2.ListNotificationsRequest, context: Context
    ) -> notifications_pb2.ListNotificationsResponse:
        page = await self._notifications.list_notifications(
            request.customer_id,
            request.page_size,
            request.page_token,
            subject=subject(context.invocation_metadata()),
        )
        return notifications_pb2.ListNotificationsResponse(
            notifications=[notification_to_proto(n) for n in page.notifications],
            next_page_token=page.next_page_token,
        )

    async def StreamNotifications(  # noqa: N802
        self, request: notifications_pb2.StreamNotificationsRequest, context: Context
    ) -> AsyncIterator[notifications_pb2.StreamNotificationsResponse]:
        try:
            check_stream_request(request.customer_id, subject(context.invocation_metadata()))
        except (InvalidArgument, NotYourCustomer) as error:
            await abort_for(context, error, STATUSES)
        broadcaster = self._notifications.broadcaster
        with broadcaster.subscribe(request.customer_id or None) as subscription:
            # Headers go out only once the subscription exists: a client that
            # waits for them knows that nothing created from now on is missed.
            await context.send_initial_metadata(())
            while True:
                try:
                    notification = await subscription.next()
                except SubscriptionEnded as ended:
                    code = (
                        grpc.StatusCode.UNAVAILABLE
                        if ended.shutting_down
                        else grpc.StatusCode.RESOURCE_EXHAUSTED
                    )
                    context.set_code(code)
                    await context.abort(code, ended.reason)
                yield notifications_pb2.StreamNotificationsResponse(
                    notification=notification_to_proto(notification)
                )
