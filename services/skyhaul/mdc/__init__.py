"""The modular data center: durable local object store, outbox and sync to its home region."""
