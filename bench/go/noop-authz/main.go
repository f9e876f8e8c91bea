// A gRPC server that answers every call of one method with the same bytes, the request read but
// never decoded: what a call costs when the server does no work, on grpc-go. The Go counterpart of
// bench/lib/grpc-echo.ts, taking the same arguments.
//
//	noop-authz PORT METHOD_PATH ANSWER_BASE64
package main

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rawCodec passes message bytes through as they are: nothing is decoded or encoded.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = data
	return nil
}

func (rawCodec) Name() string { return "proto" }

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: noop-authz PORT METHOD_PATH ANSWER_BASE64")
		os.Exit(2)
	}
	port, method := os.Args[1], os.Args[2]
	answer, err := base64.StdEncoding.DecodeString(os.Args[3])
	if err != nil {
		fmt.Fprintf(os.Stderr, "ANSWER_BASE64: not base64: %v\n", err)
		os.Exit(2)
	}
	lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		fmt.Fprintf(os.Stderr, "listen on 127.0.0.1:%s: %v\n", port, err)
		os.Exit(1)
	}
	server := grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			if m, _ := grpc.MethodFromServerStream(stream); m != method {
				return status.Errorf(codes.Unimplemented, "only %s is served", method)
			}
			var request []byte
			if err := stream.RecvMsg(&request); err != nil {
				return err
			}
			return stream.SendMsg(&answer)
		}),
	)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		server.GracefulStop()
	}()
	if err := server.Serve(lis); err != nil {
		fmt.Fprintf(os.Stderr, "serve: %v\n", err)
		os.Exit(1)
	}
}
