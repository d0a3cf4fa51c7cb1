// A digest is a checkpoint of the ledger a person can save (the RFC 6962
// tree head of the whole ledger, or of one target's chain): its text form,
// as `migledger audit digest` prints it, and the check that a ledger is an
// append-only extension of a saved one (`audit verify --digest`).
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "ledger/ledger.h"

namespace migledger {

// The text form of `digest`:
//   migledger-digest v1
//   ledger_id: <32 hex>
//   target: <target key>      (only for a target's digest)
//   size: <events>
//   root: <64 hex>
std::string FormatDigest(const LedgerDigest& digest);

// Reads FormatDigest's text back. Lines it does not know are ignored; the
// header, size and root are required: kInvalidInput without them.
StatusOr<LedgerDigest> ParseDigest(std::string_view text);

// Ok when `ledger` extends `saved`: the same ledger id, at least `saved.size`
// events (in the saved target's chain when it names one), and the first
// `saved.size` of them hash to the saved root. kLedgerCorrupt saying which
// of these fails otherwise.
Status CheckExtendsDigest(Ledger* ledger, const LedgerDigest& saved);

}  // namespace migledger
