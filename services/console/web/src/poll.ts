// Runs a task now and again every interval after it finishes (never two at
// once), whatever it throws: a poller stops only with the page. now() runs it
// at once, as after a filter changes, and restarts the interval from there.

export interface Poller {
  now(): void;
}

export function poll(task: () => Promise<void>, intervalMs: number, onError: (error: unknown) => void): Poller {
  let timer: number | undefined;
  let running = false;
  let again = false;

  const run = async (): Promise<void> => {
    if (running) {
      again = true;
      return;
    }
    window.clearTimeout(timer);
    running = true;
    try {
      await task();
    } catch (error) {
      onError(error);
    } finally {
      running = false;
      if (again) {
        again = false;
        void run();
      } else {
        timer = window.setTimeout(() => void run(), intervalMs);
      }
    }
  };

  void run();
  return { now: () => void run() };
}
