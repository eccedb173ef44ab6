//! Docker Compose parsing for Ferry stacks.
