import Engine
import SIP

/// Assignments to pseudo-variables (`$ru = …`, `$avp(x) += …`, `$du = null`), each compiled to a closure that
/// writes the context or the message's edits.
extension ScriptCompiler {
    func assignment(_ target: PseudoVariable, _ op: AssignmentOperator, _ value: Expression,
                    _ location: SourceLocation) throws(CompileError) -> Execute {
        if !target.transformations.isEmpty {
            throw error("cannot assign to a transformed variable", at: target.location)
        }
        let evaluate = try self.value(value)
        switch target.name {
        case "var":
            guard let name = target.argument, !name.isEmpty else { throw error("$var needs a name: $var(name)", at: target.location) }
            let slot = variableSlot(name)
            if op == .append {
                return { context in
                    let current = context.variables[slot], added = evaluate(context)
                    // Numbers add (an unset variable counts as 0); anything else concatenates.
                    switch (current, added) {
                    case (.integer(let a), .integer(let b)):
                        context.variables[slot] = .integer(a &+ b)
                        return
                    case (.null, .integer(let b)):
                        context.variables[slot] = .integer(b)
                        return
                    case (.integer(let a), .text) where added.integerValue != nil:
                        context.variables[slot] = .integer(a &+ added.integerValue!)
                        return
                    default:
                        break
                    }
                    let arena = context.arena
                    var text = arena.begin()
                    arena.append(&text, current)
                    arena.append(&text, added)
                    context.variables[slot] = .text(arena.end(text))
                }
            }
            return { context in context.variables[slot] = evaluate(context) }
        case "acc_extra":
            let slot = try accExtraSlot(target)
            return { context in
                let newValue = evaluate(context)
                context.avps.remove(slot, all: true)
                if !newValue.isNull && !context.avps.push(slot, newValue) { context.fail("too many $avp values for one message") }
            }
        case "avp":
            guard let name = target.argument, !name.isEmpty else { throw error("$avp needs a name: $avp(name)", at: target.location) }
            let slot = avpSlot(name)
            if let index = target.index, index != .all {
                throw error("assigning to one position of an $avp is not supported: assign $avp(\(name)) (adds a value) "
                    + "or $(avp(\(name))[*]) (replaces them all)", at: target.location)
            }
            let all = target.index == .all || op == .assignReplacing
            return { context in
                let newValue = evaluate(context)
                if newValue.isNull {
                    context.avps.remove(slot, all: all)
                    return
                }
                if all { context.avps.remove(slot, all: true) }
                if !context.avps.push(slot, newValue) { context.fail("too many $avp values for one message") }
            }
        case "ru":
            try requireRequestRoute(target)
            return { context in
                guard case .text(let text) = evaluate(context) else {
                    context.fail("$ru can only be set to a URI")
                    return
                }
                context.requestURI = text
            }
        case "rU", "rd", "rp":
            try requireRequestRoute(target)
            let part: URIPart = target.name == "rU" ? .user : target.name == "rd" ? .host : .port
            return { context in
                let newValue = evaluate(context)
                guard let uri = replacingURIPart(context.currentRequestURI, part, with: newValue, arena: context.arena) else {
                    context.fail("cannot set $\(part) of the Request-URI")
                    return
                }
                context.requestURI = uri
            }
        case "du":
            try requireRequestRoute(target)
            return { context in
                switch evaluate(context) {
                case .text(let text) where text.count > 0: context.destinationURI = text
                default: context.destinationURI = nil
                }
            }
        case "T_fr_timeout", "T_fr_inv_timeout":
            // Seconds, as the modparams. On the transaction when it exists (its branches from the next time
            // the timer is armed), else kept until t_relay/t_newtran creates it.
            let invite = target.name == "T_fr_inv_timeout"
            return { context in
                guard let seconds = evaluate(context).integerValue, seconds > 0, seconds <= 86_400 else {
                    context.fail("$\(invite ? "T_fr_inv_timeout" : "T_fr_timeout") takes a number of seconds from 1 to 86400")
                    return
                }
                let milliseconds = seconds * 1000
                if let handle = context.transaction, let manager = context.transactions {
                    manager.setTimeouts(handle, finalResponse: invite ? nil : milliseconds,
                                        inviteFinalResponse: invite ? milliseconds : nil)
                } else if invite {
                    context.pendingInviteFinalResponseTimeout = milliseconds
                } else {
                    context.pendingFinalResponseTimeout = milliseconds
                }
            }
        default:
            if let variable = library.variables[target.name] {
                guard configuration.loadedModules.contains(variable.module) else {
                    throw error("$\(target.name) needs loadmodule \"\(variable.module).so\"", at: target.location)
                }
                guard let write = variable.write else {
                    throw error("cannot assign to $\(target.name): it is read-only", at: target.location)
                }
                if op != .assign {
                    throw error("$\(target.name) takes a plain assignment (=)", at: target.location)
                }
                return try write(target, self, evaluate)
            }
            if ScriptCompiler.readOnlyVariables.contains(target.name) || ScriptCompiler.messageFields[target.name] != nil {
                throw error("cannot assign to $\(target.name): it is read-only", at: target.location)
            }
            throw error("unknown pseudo-variable '$\(target.name)'", at: target.location)
        }
    }

    private func requireRequestRoute(_ target: PseudoVariable) throws(CompileError) {
        guard RouteKinds.requestLike.contains(RouteKinds(currentRouteKind)) else {
            throw error("$\(target.name) can only be set in a route that handles a request", at: target.location)
        }
    }
}
