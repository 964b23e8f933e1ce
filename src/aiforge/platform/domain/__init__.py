"""Pure platform rules: roles, key format and hashing, authorization. No I/O."""
