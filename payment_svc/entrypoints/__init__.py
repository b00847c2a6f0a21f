"""Entry points of the payment service: the gRPC servicer and event consumers."""
