"""Pure domain model of the group service: no grpc, sqlalchemy, nats or redis imports."""
