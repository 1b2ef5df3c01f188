-- Argo CD health check for modelfleet.dev/ModelService.
--
-- Install it under `resource.customizations.health.modelfleet.dev_ModelService` in the
-- argocd-cm ConfigMap (see README.md). Argo CD runs it with gopher-lua (Lua 5.1) and a global
-- `obj`, the live object. The verdict follows the kstatus conditions the operator writes:
--   status missing or observedGeneration behind metadata.generation -> Progressing
--   Stalled=True                                                    -> Degraded
--   Ready=True                                                      -> Healthy
--   otherwise (Reconciling=True, loading weights, rolling out)      -> Progressing
local hs = {}

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local stalled = condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local ready = condition(conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

local reconciling = condition(conditions, "Reconciling")
hs.status = "Progressing"
hs.message = describe(reconciling, describe(ready, "Waiting for the model to become ready"))
return hs
