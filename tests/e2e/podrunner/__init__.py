"""A test-only kubelet: runs the Pods of an emulated cluster as Docker containers.

The emulated backend has an API server but no nodes. This package plays the kubelet:
it watches Pods, starts each as a container of its image with host networking, and
reports phase, exit code, reason and termination message back through the API.

    translate.py  pure: Pod manifest + host-side inputs -> `docker run` arguments
    status.py     pure: a container's observed state -> the Pod status patch
    addresses.py  one loopback address per pod, and the /etc/hosts entries of a pod
    docker.py     the Docker CLI, nothing else
    runner.py     the loop that ties the API and Docker together
"""
