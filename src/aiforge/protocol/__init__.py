"""Wire models: the structs that cross the HTTP boundary, and nothing else."""
