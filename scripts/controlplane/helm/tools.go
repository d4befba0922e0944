//go:build tools

// The command this module builds; the build tag keeps the file out of any compile and
// lets `go mod tidy` record its dependencies in go.sum.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
