"""Process and thread plumbing shared by the adapters and the application (standard library only)."""
