"""What the fuzz crates' seed.sh scripts share: corpus/<target>/ directories whose
files are named by the SHA-1 of their contents, as libFuzzer names corpus entries,
so that re-running a seed adds nothing twice."""

import hashlib
import os


class Corpus:
    def __init__(self, root):
        self.root = root
        # New files per target, for the summary.
        self.counts = {}

    def add(self, target, data):
        if isinstance(data, str):
            data = data.encode()
        d = os.path.join(self.root, target)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, hashlib.sha1(data).hexdigest())
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
            self.counts[target] = self.counts.get(target, 0) + 1

    def report(self, targets):
        for target in targets:
            d = os.path.join(self.root, target)
            total = len(os.listdir(d)) if os.path.isdir(d) else 0
            print(f"{target}: {self.counts.get(target, 0)} new, {total} in corpus/{target}")
