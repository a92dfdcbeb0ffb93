"""Validation of FHIR resources with ``fhir.resources.R4B``.

HDDT is FHIR R4 (4.0.1); fhir.resources ships R4B (4.3.0) and R5 models but
no 4.0.1 ones, so the suite validates with R4B. The resources HDDT exchanges
(Observation, Device, DeviceMetric, Bundle, OperationOutcome, Parameters,
CapabilityStatement) have the same elements in R4 and R4B for everything a
Device Data Recorder sends; the differences of R4B are in other resources
(medication definition, Evidence, SubscriptionTopic, …) and in value sets the
models do not bind. The validation is structural (element names, types,
cardinalities, choice types, primitive formats), not a profile check: that is
``conformance/fhir-validate`` with the HL7 validator.
"""

from fhir.resources.R4B import get_fhir_model_class

# The ``where`` of resources the suite sends itself (validated, not dumped).
SENT = "Parameters sent"


class Validator:
    """Validates resources and collects the failures of a whole run."""

    def __init__(self):
        self.checked = 0
        self.failures = []
        self.resources = []

    def validate(self, resource, where):
        """Validates ``resource`` (parsed JSON) against its R4B model.

        Returns True when it is valid; otherwise records ``where`` and the
        error and returns False. A Bundle is validated with every entry.
        """
        self.checked += 1
        self.resources.append((where, resource))
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if not kind:
            self.failures.append((where, "no resourceType"))
            return False
        try:
            model = get_fhir_model_class(kind)
        except KeyError:
            self.failures.append((where, f"unknown resourceType {kind}"))
            return False
        try:
            model.model_validate(resource)
        except Exception as error:  # pydantic's ValidationError and friends
            text = " ".join(str(error).split())
            self.failures.append((where, f"{kind}: {text[:400]}"))
            return False
        return True

    def dump(self, directory):
        """Writes every validated resource to ``directory`` as ``NNNN.json``
        (for ``conformance/fhir-validate``); returns how many."""
        import json
        import os

        os.makedirs(directory, exist_ok=True)
        served = [resource for where, resource in self.resources if where != SENT]
        for number, resource in enumerate(served):
            with open(os.path.join(directory, f"{number:04d}.json"), "w") as out:
                json.dump(resource, out)
        return len(served)
