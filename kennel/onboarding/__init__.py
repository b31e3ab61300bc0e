"""Bringing your own data to Kennel: `kennel init` drafts a data-set spec from landed files
(kennel.onboarding.infer) and `kennel check` dry-runs the real cleaning on a sample of them
(kennel.onboarding.dry_run); kennel.onboarding.cli holds both subcommands."""
