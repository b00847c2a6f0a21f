"""Entry points of the notification service: the gRPC servicer and event consumers."""
