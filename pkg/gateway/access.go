package gateway

import (
	"github.com/mcpgw/mcpgw/pkg/chain/access"
	"github.com/mcpgw/mcpgw/pkg/config"
)

// allowLevel is each [[access]] allow's level; config.Parse admits no
// other (and a level not here would be none).
var allowLevel = map[string]access.Allow{
	config.AllowNone:      access.None,
	config.AllowRead:      access.Read,
	config.AllowReadWrite: access.ReadWrite,
}

// policy translates the [[access]] tables into the access handler's
// policy (no tables: everything allowed).
func policy(tables []config.Access) *access.Policy {
	p := &access.Policy{}
	for _, a := range tables {
		p.Rules = append(p.Rules, access.Rule{Roles: a.Roles, Sources: a.SourceNets, Units: a.UnitIDs, Allow: allowLevel[a.Allow]})
	}
	return p
}
