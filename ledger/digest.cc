#include "ledger/digest.h"

#include <sstream>

#include "ledger/merkle.h"

namespace migledger {

std::string FormatDigest(const LedgerDigest& d) {
  return "migledger-digest v1\nledger_id: " + d.ledger_id +
         (d.target_key.empty() ? "" : "\ntarget: " + d.target_key) +
         "\nsize: " + std::to_string(d.size) + "\nroot: " + ToHex(d.root) +
         "\n";
}

StatusOr<LedgerDigest> ParseDigest(std::string_view text) {
  LedgerDigest d;
  std::istringstream in{std::string(text)};
  std::string line;
  bool header = false, has_size = false, has_root = false;
  while (std::getline(in, line)) {
    if (line == "migledger-digest v1") {
      header = true;
    } else if (line.rfind("ledger_id: ", 0) == 0) {
      d.ledger_id = line.substr(11);
    } else if (line.rfind("target: ", 0) == 0) {
      d.target_key = line.substr(8);
    } else if (line.rfind("size: ", 0) == 0) {
      try {
        d.size = std::stoull(line.substr(6));
        has_size = true;
      } catch (...) {
      }
    } else if (line.rfind("root: ", 0) == 0) {
      has_root = FromHex(line.substr(6), &d.root);
    }
  }
  if (!header || !has_size || !has_root) {
    return InvalidInput(
        "not a migledger digest (expected the output of `migledger audit "
        "digest`)");
  }
  return d;
}

Status CheckExtendsDigest(Ledger* ledger, const LedgerDigest& saved) {
  if (saved.ledger_id != ledger->ledger_id()) {
    return LedgerCorrupt("the digest is of another ledger (" + saved.ledger_id +
                         ")");
  }
  const uint64_t size = saved.target_key.empty()
                            ? ledger->Head().size
                            : ledger->TargetHead(saved.target_key).size;
  if (saved.size > size) {
    return LedgerCorrupt("the ledger has " + std::to_string(size) +
                         " events but the digest covers " +
                         std::to_string(saved.size) +
                         ": events were removed (first missing sequence " +
                         std::to_string(size + 1) + ")");
  }
  Digest32 root_now = MerkleEmptyRoot();
  if (saved.size > 0) {
    MIGLEDGER_ASSIGN_OR_RETURN(LedgerDigest now,
                               ledger->Digest(saved.target_key, saved.size));
    root_now = now.root;
  }
  if (root_now != saved.root) {
    // Without the old leaves there is no finding which event changed: the
    // range the checkpoint covers is what can be named.
    return LedgerCorrupt(
        "the ledger is not an append-only extension of the digest: the "
        "first " +
        std::to_string(saved.size) +
        " events no longer hash to the saved root (an event at or before "
        "sequence " +
        std::to_string(saved.size) + " was edited, removed or reordered)");
  }
  return Status::Ok();
}

}  // namespace migledger
