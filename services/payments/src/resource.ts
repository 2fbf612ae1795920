// The OpenTelemetry resource of the payments process, shared by its traces
// (telemetry.ts) and its metrics (metrics.ts), so that both say the same
// service.name. `merge` lets its argument win: the environment
// (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) overrides the service's own
// default name.

import {
  defaultResource,
  detectResources,
  envDetector,
  type Resource,
  resourceFromAttributes,
} from "@opentelemetry/resources";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";

import { SERVICE_NAME } from "./logging";

export function serviceResource(): Resource {
  return defaultResource()
    .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: SERVICE_NAME }))
    .merge(detectResources({ detectors: [envDetector] }));
}
