"""ftjob trainer: the training container entrypoint."""
