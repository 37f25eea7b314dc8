"""A job entry point that never ends by itself: the deadline tests' stand-in for a stuck training run."""

import time

if __name__ == "__main__":
    print("sleeper: started, waiting for the job's timeout", flush=True)
    while True:
        time.sleep(1)
