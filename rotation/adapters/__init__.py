"""Adapters: each wraps one SDK, imports it lazily, and translates its errors into core.errors."""
