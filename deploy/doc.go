// Package deploy holds no code: its tests check the deployment files
// (docker-compose.yaml and the Dockerfile at the repository root,
// deploy/k8s, deploy/postgres, deploy/prometheus) so that a typo in one
// fails `make test` on a machine with no Docker engine, Kubernetes cluster
// or Prometheus. The workers' PostgreSQL role step runs for real, with
// psql, against the PostgreSQL the tests start.
package deploy
