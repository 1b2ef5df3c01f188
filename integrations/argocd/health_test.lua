-- Runs health.lua on sample ModelService statuses and checks each verdict.
-- Usage: lua5.1 health_test.lua (from any directory). Exits non-zero on the first mismatch.
local dir = arg[0]:match("(.*/)") or "./"
local script = assert(loadfile(dir .. "health.lua"))

local function cond(type, status, reason, message)
  return { type = type, status = status, reason = reason, message = message or "" }
end

local cases = {
  {
    name = "no status yet",
    obj = { metadata = { generation = 1 } },
    status = "Progressing", message = "Waiting for the operator to report status",
  },
  {
    name = "spec changed, not observed yet",
    obj = { metadata = { generation = 3 }, status = { observedGeneration = 2,
      conditions = { cond("Ready", "True", "Available", "1/1 replicas ready") } } },
    status = "Progressing", message = "Waiting for the operator to observe generation 3",
  },
  {
    name = "ready",
    obj = { metadata = { generation = 2 }, status = { observedGeneration = 2, conditions = {
      cond("Ready", "True", "Available", "2/2 replicas ready"),
      cond("Stalled", "False", "Reconciled"),
      cond("Reconciling", "False", "Reconciled") } } },
    status = "Healthy", message = "2/2 replicas ready",
  },
  {
    name = "digest mismatch",
    obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = {
      cond("Ready", "False", "DigestMismatch", "runtime in pod smollm2-x: sha256 digest mismatch"),
      cond("Stalled", "True", "DigestMismatch", "runtime in pod smollm2-x: sha256 digest mismatch") } } },
    status = "Degraded", message = "runtime in pod smollm2-x: sha256 digest mismatch",
  },
  {
    name = "unschedulable",
    obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = {
      cond("Ready", "False", "Unschedulable", "x"),
      cond("Stalled", "True", "Unschedulable", "pod p cannot be scheduled: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.") } } },
    status = "Degraded", message = "pod p cannot be scheduled: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
  },
  {
    name = "downloading weights",
    obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = {
      cond("Ready", "False", "Downloading", "downloading the weights: 40.0 MiB of 93.8 MiB"),
      cond("Stalled", "False", "Reconciled"),
      cond("Reconciling", "True", "Downloading", "downloading the weights: 40.0 MiB of 93.8 MiB") } } },
    status = "Progressing", message = "downloading the weights: 40.0 MiB of 93.8 MiB",
  },
  {
    name = "invalid spec",
    obj = { metadata = { generation = 4 }, status = { observedGeneration = 4, conditions = {
      cond("Ready", "False", "InvalidSpec", "spec.model.uri: hf:// is not supported by this runtime version yet"),
      cond("Stalled", "True", "InvalidSpec", "spec.model.uri: hf:// is not supported by this runtime version yet") } } },
    status = "Degraded", message = "spec.model.uri: hf:// is not supported by this runtime version yet",
  },
  {
    name = "status without conditions",
    obj = { metadata = { generation = 1 }, status = { observedGeneration = 1 } },
    status = "Progressing", message = "Waiting for the model to become ready",
  },
}

local failed = 0
for _, case in ipairs(cases) do
  obj = case.obj -- the global Argo CD sets
  local hs = script()
  if hs.status ~= case.status or hs.message ~= case.message then
    failed = failed + 1
    print(string.format("FAIL %s: got %s (%s), want %s (%s)", case.name, tostring(hs.status),
      tostring(hs.message), case.status, case.message))
  else
    print(string.format("ok   %s: %s", case.name, hs.status))
  end
end
print(string.format("%d passed, %d failed", #cases - failed, failed))
if failed > 0 then
  os.exit(1)
end
