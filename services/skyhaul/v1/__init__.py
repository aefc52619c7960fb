"""Generated from protos/skyhaul/v1 by `make proto`. Do not edit."""
