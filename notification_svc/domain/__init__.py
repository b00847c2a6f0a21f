"""Pure domain model of the notification service: no grpc, sqlalchemy, nats or redis imports."""
