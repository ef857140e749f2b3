"""The pure core: decisions only. Standard library imports only; time is always a parameter."""
