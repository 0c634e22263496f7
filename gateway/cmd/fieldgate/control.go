package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"fieldgate/gateway/config"
	"fieldgate/gateway/httpapi"
	"fieldgate/gateway/supervisor"
)

// cmdControl is `fieldgate stop NAME` and `fieldgate start NAME`: it asks the
// running supervisor (POST /collectors/NAME/stop|start on gateway.listen),
// with the operator token the supervisor writes in its state dir.
func cmdControl(ctx context.Context, op string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "supervisor HTTP address HOST:PORT (default: gateway.listen of --config or "+defaultConfigPath+", else "+config.DefaultGateway.Listen+")")
	path := fs.String("config", "", "gateway config `FILE` to take gateway.listen and data_dir from")
	tokenFile := fs.String("token-file", "", "operator token `FILE` (default: {data_dir}/"+supervisor.StateDirName+"/"+httpapi.TokenFile+" of --config or "+defaultConfigPath+")")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("%s: want one collector name, got %d arguments", op, len(pos))
	}
	name := pos[0]
	target, err := listenAddr(*addr, *path, stderr)
	if err != nil {
		return err
	}
	// Root on the gateway needs no token (the supervisor knows the uid of a
	// loopback client); the token lets a supervisor elsewhere, or a
	// non-root operator with access to the file, be asked too.
	explicit := *tokenFile != ""
	if !explicit {
		*tokenFile = filepath.Join(dataDir(*path), supervisor.StateDirName, httpapi.TokenFile)
	}
	token, err := httpapi.ReadToken(*tokenFile)
	if err != nil && explicit {
		return fmt.Errorf("%s %q: %w", op, name, err)
	}
	st, err := control(ctx, target, token, op, name)
	if err != nil {
		return err
	}
	switch {
	case st.State == supervisor.StateRunning:
		fmt.Fprintf(stdout, "%s: running (pid %d)\n", st.Name, st.Pid)
	case st.LastError != "":
		fmt.Fprintf(stdout, "%s: %s: %s\n", st.Name, st.State, st.LastError)
	default:
		fmt.Fprintf(stdout, "%s: %s\n", st.Name, st.State)
	}
	return nil
}

// control posts op (stop, start) for collector name to the supervisor at addr.
func control(ctx context.Context, addr, token, op, name string) (supervisor.CollectorStatus, error) {
	st, err := httpapi.Control(ctx, addr, token, op, name)
	if errors.Is(err, httpapi.ErrNoSupervisor) {
		return st, fmt.Errorf("%w (is `fieldgate run` running? --addr or --config name another)", err)
	}
	return st, err
}

// listenAddr is the supervisor's HTTP address: addr if given, else
// gateway.listen of the config at path, else of the installed config, else
// the default.
func listenAddr(addr, path string, stderr io.Writer) (string, error) {
	if addr != "" {
		return addr, nil
	}
	if path != "" {
		cfg, err := loadConfig(path, stderr, 1)
		if err != nil {
			return "", err
		}
		return cfg.Gateway.Listen, nil
	}
	// On a gateway, the installed config says where fieldgate listens.
	if cfg, err := config.Load(defaultConfigPath); err == nil {
		return cfg.Gateway.Listen, nil
	}
	return config.DefaultGateway.Listen, nil
}

// dataDir is gateway.data_dir of the config at path, else of the installed
// config, else the default. A config that does not load was reported by
// listenAddr already when path was given.
func dataDir(path string) string {
	if path == "" {
		path = defaultConfigPath
	}
	if cfg, err := config.Load(path); err == nil {
		return cfg.Gateway.DataDir
	}
	return config.DefaultGateway.DataDir
}
