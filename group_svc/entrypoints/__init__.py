"""Entry points of the group service: the gRPC servicer and event consumers."""
