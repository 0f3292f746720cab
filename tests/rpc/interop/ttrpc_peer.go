// ttrpc-peer: a ttrpc client and server built from containerd's own Go ttrpc library (Debian's
// golang-github-containerd-ttrpc-dev), so vessel's C++ ttrpc is tested against an implementation
// it did not write. Built offline in GOPATH mode against /usr/share/gocode.
//
//	ttrpc-peer serve -socket PATH            serve vessel.test.v1.Echo; prints "ready" when listening
//	ttrpc-peer call -socket PATH -method M [-service S] [-value V] [-timeout-ms T] [-md k=v]...
//	                                         one call; prints "code=<n> value=<v> message=<m>"
//	ttrpc-peer bench -socket PATH -n N [-value-bytes B]
//	                                         N sequential Echo calls; prints latency percentiles
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const service = "vessel.test.v1.Echo"

type mdFlags []string

func (m *mdFlags) String() string     { return strings.Join(*m, ",") }
func (m *mdFlags) Set(v string) error { *m = append(*m, v); return nil }

func serve(path string) error {
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	s, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	s.Register(service, map[string]ttrpc.Method{
		"Echo": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req types.StringValue
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			return &types.StringValue{Value: req.Value}, nil
		},
		// Value "<code>:<message>" comes back as that error status.
		"Fail": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req types.StringValue
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			parts := strings.SplitN(req.Value, ":", 2)
			code, _ := strconv.Atoi(parts[0])
			return nil, status.Error(codes.Code(code), parts[1])
		},
		// Sleeps Value milliseconds unless the call's deadline comes first.
		"Sleep": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req types.StringValue
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			ms, _ := strconv.Atoi(req.Value)
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
				return &types.StringValue{Value: "slept " + req.Value}, nil
			case <-ctx.Done():
				return nil, status.Error(codes.DeadlineExceeded, "go server: "+ctx.Err().Error())
			}
		},
		// Returns the metadata values under key Value, joined by ",", and whether a deadline is set.
		"Metadata": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req types.StringValue
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			md, _ := ttrpc.GetMetadata(ctx)
			_, hasDeadline := ctx.Deadline()
			return &types.StringValue{Value: strings.Join(md[req.Value], ",") + fmt.Sprintf(";deadline=%v", hasDeadline)}, nil
		},
	})
	fmt.Println("ready")
	return s.Serve(context.Background(), l)
}

func call(path, svc, method, value string, timeoutMs int, md []string) error {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	ctx := context.Background()
	if timeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeoutMs)*time.Millisecond)
		defer cancel()
	}
	if len(md) > 0 {
		m := ttrpc.MD{}
		for _, kv := range md {
			p := strings.SplitN(kv, "=", 2)
			m.Append(p[0], p[1])
		}
		ctx = ttrpc.WithMetadata(ctx, m)
	}
	var resp types.StringValue
	err = client.Call(ctx, svc, method, &types.StringValue{Value: value}, &resp)
	st, _ := status.FromError(err)
	if err == context.DeadlineExceeded {
		st = status.New(codes.DeadlineExceeded, err.Error())
	}
	fmt.Printf("code=%d value=%s message=%s\n", int(st.Code()), resp.Value, st.Message())
	return nil
}

func bench(path string, n, valueBytes int) error {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	req := &types.StringValue{Value: strings.Repeat("x", valueBytes)}
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		t := time.Now()
		var resp types.StringValue
		if err := client.Call(context.Background(), service, "Echo", req, &resp); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	total := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("calls=%d p50_us=%.1f p99_us=%.1f calls_per_s=%.0f\n", n,
		float64(lat[n/2].Nanoseconds())/1e3, float64(lat[n*99/100].Nanoseconds())/1e3,
		float64(n)/total.Seconds())
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ttrpc-peer serve|call|bench -socket PATH ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	socket := fs.String("socket", "", "Unix socket path")
	svc := fs.String("service", service, "service name")
	method := fs.String("method", "Echo", "method")
	value := fs.String("value", "", "StringValue request")
	timeoutMs := fs.Int("timeout-ms", 0, "call timeout")
	n := fs.Int("n", 10000, "bench calls")
	valueBytes := fs.Int("value-bytes", 16, "bench request size")
	var md mdFlags
	fs.Var(&md, "md", "metadata key=value (repeatable)")
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(*socket)
	case "call":
		err = call(*socket, *svc, *method, *value, *timeoutMs, md)
	case "bench":
		err = bench(*socket, *n, *valueBytes)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ttrpc-peer:", err)
		os.Exit(1)
	}
}
