/**
 * The periodic tasks every server runs in its background loop (see
 * background-workers.ts). A task is `(context, now) => Promise<void>`: it
 * finds what is due at `now` and does it, claiming its rows through the
 * database (several replicas run the same tasks at the same time). A task
 * that throws is logged and retried on the next tick; the others run anyway.
 *
 * To add one: import it below and add one line to the list, e.g.
 *
 *   { name: "purge", run: runPurge },
 *   { name: "event-pruning", run: pruneKeyEvents, everyMs: 60 * 60_000 },
 */
import type { KmsContext } from "../service/kms-context.js";
import { probeCustomerKeys } from "./customer-key-probe.js";
import { destructionTask } from "./destruction.js";
import { eventPruningTask } from "./event-pruning.js";
import { purgeTask } from "./purge.js";
import { scheduledRotationTask } from "./rotation-scheduler.js";
import type { BackgroundLogger } from "./job-handler.js";
import { rootKeyRotationTask } from "./root-key-rotation-task.js";
import { rootProviderSwitchTask } from "./root-provider-switch-task.js";

export interface PeriodicTask {
  /** Names the task in log lines. */
  readonly name: string;
  readonly run: (context: KmsContext, now: Date) => Promise<void>;
  /** How often it runs; default: every tick of the loop (KMS_WORKER_INTERVAL_MS). */
  readonly everyMs?: number;
}

/** What the built-in tasks need from the configuration. */
export interface PeriodicTaskSettings {
  /** Scheduled master-key rotation: the current version's age that triggers one; 0 turns it off. */
  readonly rootKeyRotationDays: number;
  /** Key events older than this many days are pruned (KMS_EVENT_RETENTION_DAYS); default 7. */
  readonly eventRetentionDays?: number | undefined;
  /** For tasks that report to the operator (the end of a switch of root provider); without it they are left out. */
  readonly logger?: BackgroundLogger | undefined;
}

export function periodicTasks(settings: PeriodicTaskSettings): PeriodicTask[] {
  return [
    { name: "root-key-rotation", run: rootKeyRotationTask(settings.rootKeyRotationDays), everyMs: 60_000 },
    { name: "event-pruning", run: eventPruningTask({ retentionDays: settings.eventRetentionDays }), everyMs: 60 * 60_000 },
    { name: "scheduled-rotation", run: scheduledRotationTask, everyMs: 60_000 },
    { name: "dek-purge", run: purgeTask, everyMs: 5 * 60_000 },
    { name: "key-destruction", run: destructionTask, everyMs: 60_000 },
    { name: "customer-key-probe", run: probeCustomerKeys, everyMs: 60_000 },
    ...(settings.logger === undefined ? [] : [{ name: "root-provider-switch", run: rootProviderSwitchTask(settings.logger), everyMs: 10_000 }]),
  ];
}
