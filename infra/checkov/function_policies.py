"""Least privilege for the functions' own policies, which checkov's IAM
checks never see: SAM turns a function's `Policies` into its role only at
deploy time, and those checks read AWS::IAM resources.

Every grant is a statement written out in the template: no action with a
wildcard, no `Resource: "*"`, and no SAM policy template or managed policy,
as those grant more than their names say (SQSSendMessagePolicy is
`sqs:SendMessage*`, S3ReadPolicy reads and lists the whole bucket).
"""

from checkov.cloudformation.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


def as_list(value):
    return value if isinstance(value, list) else [value]


class FunctionPoliciesWrittenOut(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Ensure a function's policies are statements naming each action and resource",
            id="CKV_LEDGER_1",
            categories=[CheckCategories.IAM],
            supported_resources=["AWS::Serverless::Function"],
        )

    def scan_resource_conf(self, conf):
        policies = conf.get("Properties", {}).get("Policies", [])
        for index, policy in enumerate(as_list(policies)):
            self.evaluated_keys = [f"Properties/Policies/{index}"]
            statements = policy.get("Statement") if isinstance(policy, dict) else None
            if statements is None:
                return CheckResult.FAILED
            for statement in as_list(statements):
                actions = as_list(statement.get("Action", []))
                resources = as_list(statement.get("Resource", []))
                if "NotAction" in statement or "NotResource" in statement:
                    return CheckResult.FAILED
                if any(not isinstance(a, str) or "*" in a for a in actions):
                    return CheckResult.FAILED
                if not resources or "*" in resources:
                    return CheckResult.FAILED
        return CheckResult.PASSED


check = FunctionPoliciesWrittenOut()
