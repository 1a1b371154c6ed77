// Command etcd is the upstream etcd server, built from its Go module.
//
// Why a wrapper: go.etcd.io/etcd/server/v3 carries replace directives to sibling
// folders, so `go install go.etcd.io/etcd/server/v3@vX` refuses to build it;
// a tiny main in our own module that calls etcdmain.Main is the supported way
// to get the same binary from the module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
