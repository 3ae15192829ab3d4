"""The commands: plain functions that take option objects and a Streams, never argv."""
