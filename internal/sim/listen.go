package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// shutdownGrace bounds how long ListenAndServe waits for in-flight requests
// after its context is cancelled before closing connections forcibly.
const shutdownGrace = 5 * time.Second

// ListenAndServe serves h on addr (":0" picks a free port) until ctx is
// cancelled, then shuts down gracefully. It returns the address actually
// bound and a wait function that blocks until the server has stopped; wait
// returns nil after a clean shutdown. Requests get ctx as their parent
// context, so slow answers end promptly on shutdown.
func ListenAndServe(ctx context.Context, addr string, h http.Handler) (actualAddr string, wait func() error, err error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("sim: listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	done := make(chan error, 1)
	go func() {
		var err error
		select {
		case err = <-serveErr:
			// Serve failed on its own; there is nothing left to shut down.
		case <-ctx.Done():
			// The caller's context is already cancelled, so the grace period
			// needs a fresh one.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
			err = srv.Shutdown(sctx)
			cancel()
			if err != nil {
				err = errors.Join(err, srv.Close())
			}
			if serr := <-serveErr; !errors.Is(serr, http.ErrServerClosed) {
				err = errors.Join(err, serr)
			}
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	// wait may be called more than once, from any goroutine (for example by
	// a deferred call and an explicit one); every call returns the result.
	wait = sync.OnceValue(func() error { return <-done })
	return ln.Addr().String(), wait, nil
}
