// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3/etcdmain), built from the
// pinned module for the tests' control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
