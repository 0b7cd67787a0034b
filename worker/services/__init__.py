"""Business rules. Each service takes a UnitOfWork (or Session) and plain values; no broker."""
