// Package deploy holds ingestd's Kubernetes manifests (a kustomize base and
// an example overlay) and the tests that validate them, and the repository's
// docker-compose.yml, offline: every manifest is decoded strictly into the
// real Kubernetes, Prometheus Operator and kustomize types, the overlay is
// built with kustomize's Go API, alert expressions are parsed with
// Prometheus' own PromQL parser, and the compose file is loaded with
// compose-go, the library behind `docker compose config`. There is no Go
// code here besides the tests.
package deploy
