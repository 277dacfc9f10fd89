"""The `ftjob` command (validate, crd, run --local, report), on top of the API, the operator
and the trainer packages; nothing imports it."""
