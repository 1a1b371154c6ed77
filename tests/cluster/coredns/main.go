// CoreDNS with only the plugins the test node's cluster DNS needs.
//
// Why a small main: the upstream binary links every plugin (cloud DNS
// providers, etcd, ...); the node needs kubernetes, forward and a few
// housekeeping plugins, so this builds in a fraction of the time from the
// same module version (plugin order follows upstream's plugin.cfg).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{
		"bind", "ready", "health", "errors", "log", "cache", "loop", "kubernetes",
	}
}

func main() { coremain.Run() }
