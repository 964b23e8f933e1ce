"""Platform operations: repositories (queries), the admin service, the key cache."""
