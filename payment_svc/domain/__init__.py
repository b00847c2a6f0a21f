"""Pure domain model of the payment service: no grpc, sqlalchemy, nats or redis imports."""
