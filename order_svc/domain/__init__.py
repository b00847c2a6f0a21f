"""Pure domain model of the order service: no grpc, sqlalchemy, nats or redis imports."""
