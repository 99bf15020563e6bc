# Runtime policy for the Kata Containers agent in a Contrast pod VM.
#
# The agent asks this policy about every request the (untrusted) host sends it; each rule
# below is named after the agent API request it decides. Anything not allowed is denied.
# `policy_data`, appended by `contrast generate`, describes the pod exactly as it was
# written (after injection): its containers, their images, processes, environment, mounts,
# devices and capabilities. The SHA-256 of this whole text is the pod VM's host data, which
# the Coordinator matches against the manifest before it hands out any secret.
package agent_policy

import rego.v1

# Requests the agent needs to run and stop the pod.
default AddARPNeighborsRequest := true
default CreateSandboxRequest := true
default DestroySandboxRequest := true
default GetMetricsRequest := true
default GetOOMEventRequest := true
default GuestDetailsRequest := true
default ListInterfacesRequest := true
default ListRoutesRequest := true
default MemHotplugByProbeRequest := true
default OnlineCPUMemRequest := true
default PullImageRequest := true
default ReadStreamRequest := true
default RemoveContainerRequest := true
default RemoveStaleVirtiofsShareMountsRequest := true
default SignalProcessRequest := true
default StartContainerRequest := true
default StatsContainerRequest := true
default UpdateInterfaceRequest := true
default UpdateRoutesRequest := true
default WaitProcessRequest := true

# Requests that would let the host change or look into the pod: denied.
default AddSwapRequest := false
default CloseStdinRequest := false
default CopyFileRequest := false
default CreateContainerRequest := false
default ExecProcessRequest := false
default PauseContainerRequest := false
default ReseedRandomDevRequest := false
default ResumeContainerRequest := false
default SetGuestDateTimeRequest := false
default SetPolicyRequest := false
default StartTracingRequest := false
default StopTracingRequest := false
default TtyWinResizeRequest := false
default UpdateContainerRequest := false
default UpdateEphemeralMountsRequest := false
default WriteStreamRequest := false

# Exec into containers (and its stdin and terminal) only where the pod opted in.
ExecProcessRequest if policy_data.allow_exec

CloseStdinRequest if policy_data.allow_exec

TtyWinResizeRequest if policy_data.allow_exec

WriteStreamRequest if policy_data.allow_exec

# The runtime copies files (hosts, resolv.conf, service account tokens) into the shared
# container directory, and only there.
CopyFileRequest if {
	startswith(input.path, "/run/kata-containers/shared/containers/")
	not contains(input.path, "/../")
}

# The pod's own containers, exactly as written.
CreateContainerRequest if {
	annotations := input.OCI.Annotations
	annotations["io.kubernetes.cri.container-type"] == "container"
	namespace_allowed(annotations)
	some container in policy_data.containers
	container.name == annotations["io.kubernetes.cri.container-name"]
	annotations["io.kubernetes.cri.image-name"] == container.image
	process_allowed(container, input.OCI.Process)
	mounts_allowed(container, object.get(input.OCI, "Mounts", []))
	devices_allowed(container, object.get(object.get(input.OCI, "Linux", {}), "Devices", []))
}

# The pause container that holds the pod's namespaces.
CreateContainerRequest if {
	annotations := input.OCI.Annotations
	annotations["io.kubernetes.cri.container-type"] == "sandbox"
	namespace_allowed(annotations)
	input.OCI.Process.Args == ["/pause"]
	every mount in object.get(input.OCI, "Mounts", []) {
		mount.destination in policy_data.runtime_mounts
	}
	count(object.get(object.get(input.OCI, "Linux", {}), "Devices", [])) == 0
}

namespace_allowed(_) if policy_data.workload.namespace == null

namespace_allowed(annotations) if {
	annotations["io.kubernetes.cri.sandbox-namespace"] == policy_data.workload.namespace
}

process_allowed(container, process) if {
	args_allowed(container, process.Args)
	cwd_allowed(container, process)
	env_allowed(container, object.get(process, "Env", []))
	capabilities_allowed(container, object.get(process, "Capabilities", {}))
}

# command + args as written; without a command the image's entrypoint comes first.
args_allowed(container, args) if {
	container.command != null
	args == array.concat(container.command, container.args)
}

args_allowed(container, args) if {
	container.command == null
	n := count(args)
	m := count(container.args)
	n >= m
	array.slice(args, n - m, n) == container.args
}

cwd_allowed(container, _) if container.workingDir == null

cwd_allowed(container, process) if process.Cwd == container.workingDir

env_allowed(container, env) if {
	every entry in env {
		env_entry_allowed(container, entry)
	}
	every declared in container.env {
		declared_env_present(declared, env)
	}
}

env_name(entry) := name if {
	i := indexof(entry, "=")
	i > 0
	name := substring(entry, 0, i)
}

env_declared(container, name) if {
	some declared in container.env
	declared.name == name
}

# A declared variable with exactly its declared value (any value for valueFrom sources).
env_entry_allowed(container, entry) if {
	name := env_name(entry)
	some declared in container.env
	declared.name == name
	declared.value == null
}

env_entry_allowed(container, entry) if {
	some declared in container.env
	declared.value != null
	entry == concat("=", [declared.name, declared.value])
}

# Variables the runtime adds (hostname, service links), or any when envFrom is used.
env_entry_allowed(container, entry) if {
	name := env_name(entry)
	not env_declared(container, name)
	runtime_env_allowed(container, name)
}

runtime_env_allowed(container, _) if container.allowUndeclaredEnv

runtime_env_allowed(_, name) if {
	some pattern in policy_data.runtime_env_patterns
	regex.match(pattern, name)
}

declared_env_present(declared, _) if declared.value == null

declared_env_present(declared, env) if {
	declared.value != null
	concat("=", [declared.name, declared.value]) in env
}

capabilities_allowed(container, capabilities) if {
	bounding := {c | some c in object.get(capabilities, "Bounding", [])}
	bounding == {c | some c in container.capabilities}
}

mounts_allowed(container, mounts) if {
	every mount in mounts {
		mount_allowed(container, mount)
	}
	every declared in container.mounts {
		declared_mount_present(declared, mounts)
	}
}

mount_declared(container, destination) if {
	some declared in container.mounts
	declared.destination == destination
}

mount_allowed(container, mount) if {
	some declared in container.mounts
	mount_matches(declared, mount)
}

mount_allowed(container, mount) if {
	not mount_declared(container, mount.destination)
	mount.destination in policy_data.runtime_mounts
}

declared_mount_present(declared, mounts) if {
	some mount in mounts
	mount_matches(declared, mount)
}

mount_matches(declared, mount) if {
	declared.destination == mount.destination
	options := object.get(mount, "options", [])
	read_only := "ro" in options
	read_only == declared.readOnly
	declared.propagation in options
}

devices_allowed(container, devices) if {
	{d.path | some d in devices} == {p | some p in container.devices}
}
