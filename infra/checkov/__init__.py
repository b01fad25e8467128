"""checkov checks of our own for template.yaml, loaded by infra/checkov.yaml."""
