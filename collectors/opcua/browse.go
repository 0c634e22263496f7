package opcua

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"fieldgate/collectors/configfile"
	"fieldgate/collectors/reading"
)

// BrowseOptions say what Browse walks.
type BrowseOptions struct {
	// Root is the node to start from; default the Objects folder (i=85).
	Root string
	// Depth limits how many levels below Root are walked; default 3.
	Depth int
}

// Browse connects as cfg says (its nodes are ignored and may be empty) and
// writes the address space below opt.Root to w, one node per line:
//
//	NODE_ID<TAB>BROWSE_PATH<TAB>DATA_TYPE
//
// where DATA_TYPE is empty for objects. The lines are what an engineer
// needs to write the `nodes:` list.
func Browse(ctx context.Context, cfg Config, w io.Writer, bo BrowseOptions, opts ...Option) error {
	o := options{dataDir: ".", poll: DefaultPollInterval, maxBatch: DefaultBatch, maxPerSub: DefaultItemsPerSubscription}
	for _, f := range opts {
		f(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	errs := configfile.NewErrors("browse")
	cfg.validate(errs, false)
	if err := errs.Err(); err != nil {
		return err
	}
	root := ua.NewNumericNodeID(0, id.ObjectsFolder)
	if bo.Root != "" {
		r, err := ua.ParseNodeID(bo.Root)
		if err != nil {
			return fmt.Errorf("invalid node id %q: %w", bo.Root, err)
		}
		root = r
	}
	if bo.Depth <= 0 {
		bo.Depth = 3
	}
	e, err := newEngine(cfg, nil, o)
	if err != nil {
		return err
	}
	c, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer closeClient(c)
	b := &browser{c: c, w: w}
	return b.walk(ctx, root, "", bo.Depth)
}

type browser struct {
	c *opcua.Client
	w io.Writer
}

// children returns the forward hierarchical references of n (objects and
// variables), following continuation points.
func (b *browser) children(ctx context.Context, n *ua.NodeID) ([]*ua.ReferenceDescription, error) {
	res, err := b.c.Browse(ctx, &ua.BrowseRequest{
		NodesToBrowse: []*ua.BrowseDescription{{
			NodeID:          n,
			BrowseDirection: ua.BrowseDirectionForward,
			ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences),
			IncludeSubtypes: true,
			NodeClassMask:   uint32(ua.NodeClassObject | ua.NodeClassVariable),
			ResultMask:      uint32(ua.BrowseResultMaskAll),
		}},
		RequestedMaxReferencesPerNode: 1000,
	})
	if err != nil {
		return nil, fmt.Errorf("browse %s: %w", n, err)
	}
	if len(res.Results) != 1 {
		return nil, fmt.Errorf("browse %s: no result", n)
	}
	r := res.Results[0]
	if quality(r.StatusCode) == reading.Bad {
		return nil, fmt.Errorf("browse %s: %s", n, statusName(r.StatusCode))
	}
	refs := r.References
	cp := r.ContinuationPoint
	for len(cp) > 0 {
		next, err := b.c.BrowseNext(ctx, &ua.BrowseNextRequest{ContinuationPoints: [][]byte{cp}})
		if err != nil {
			return nil, fmt.Errorf("browse next %s: %w", n, err)
		}
		if len(next.Results) != 1 {
			break
		}
		refs = append(refs, next.Results[0].References...)
		cp = next.Results[0].ContinuationPoint
	}
	return refs, nil
}

func (b *browser) dataTypes(ctx context.Context, refs []*ua.ReferenceDescription) []string {
	out := make([]string, len(refs))
	var nodes []*ua.ReadValueID
	var idx []int
	for i, r := range refs {
		if r.NodeClass == ua.NodeClassVariable {
			nodes = append(nodes, &ua.ReadValueID{NodeID: ua.NewNodeIDFromExpandedNodeID(r.NodeID), AttributeID: ua.AttributeIDDataType})
			idx = append(idx, i)
		}
	}
	for start := 0; start < len(nodes); start += DefaultBatch {
		end := min(start+DefaultBatch, len(nodes))
		res, err := b.c.Read(ctx, &ua.ReadRequest{NodesToRead: nodes[start:end], TimestampsToReturn: ua.TimestampsToReturnNeither})
		if err != nil || len(res.Results) != end-start {
			continue
		}
		for j, dv := range res.Results {
			if dv.Value == nil {
				continue
			}
			switch dt := dv.Value.Value().(type) {
			case *ua.NodeID:
				out[idx[start+j]] = dataTypeName(dt)
			case *ua.ExpandedNodeID: // some servers (gopcua's) answer so
				out[idx[start+j]] = dataTypeName(dt.NodeID)
			}
		}
	}
	return out
}

func dataTypeName(dt *ua.NodeID) string {
	if dt.Namespace() == 0 && dt.Type() == ua.NodeIDTypeNumeric {
		if n := id.Name(dt.IntID()); n != "" {
			return n
		}
	}
	return dt.String()
}

func (b *browser) walk(ctx context.Context, n *ua.NodeID, path string, depth int) error {
	refs, err := b.children(ctx, n)
	if err != nil {
		return err
	}
	types := b.dataTypes(ctx, refs)
	for i, r := range refs {
		name := r.BrowseName.Name
		if r.BrowseName.NamespaceIndex != 0 {
			name = fmt.Sprintf("%d:%s", r.BrowseName.NamespaceIndex, name)
		}
		p := path + "/" + name
		child := ua.NewNodeIDFromExpandedNodeID(r.NodeID)
		if _, err := fmt.Fprintf(b.w, "%s\t%s\t%s\n", child.String(), p, types[i]); err != nil {
			return err
		}
		// Skip the server's own diagnostics tree unless asked for it: it is
		// large and never what a tag list needs.
		if depth > 1 && !(child.Namespace() == 0 && strings.HasPrefix(p, "/Server")) {
			if err := b.walk(ctx, child, p, depth-1); err != nil {
				return err
			}
		}
	}
	return nil
}
