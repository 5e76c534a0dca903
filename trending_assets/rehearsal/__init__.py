"""The cluster path rehearsed: the staging smoke test, and a local stack to run it on.

`smoke` is what CD runs in the staging cluster's code-location pod; `stack` starts what a
cluster provides (Kubernetes API, PostgreSQL, S3) on this machine and runs the same smoke
test in a pod of the Kubernetes stand-in (`kube`), so every step runs as its own Job.
"""
