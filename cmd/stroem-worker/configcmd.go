package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

// ConfigCmd groups config subcommands.
type ConfigCmd struct {
	Check ConfigCheckCmd `cmd:"" help:"Validate the configuration and print the effective values, where each came from (default, file, env, flag); the token is redacted."`
}

// ConfigCheckCmd is `stroem-worker config check`.
type ConfigCheckCmd struct{}

// Run validates and prints the effective configuration.
func (ConfigCheckCmd) Run(ctx context.Context, g *Globals) error {
	cfg, err := g.load(nil)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE")
	for _, e := range cfg.Redacted() {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Key, e.Value, e.Source)
	}
	tw.Flush()
	for _, w := range cfg.Warnings {
		fmt.Fprintln(g.stdout, "warning:", w)
	}
	fmt.Fprintln(g.stdout, "config OK")
	return nil
}
