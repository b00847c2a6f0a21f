"""Entry points of the order service: the gRPC servicer and event consumers."""
