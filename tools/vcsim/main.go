// Command wfp-vcsim runs the govmomi vCenter simulator with the inventory the
// harness expects: one template VM per guest of the matrix, each with a
// "baseline" snapshot, VMware Tools and a guest IP that appear after power-on,
// and fault injection for clone failures. Tests of harness/vm/vsphere.py run
// against it; nothing here is mocked on the Python side.
//
// Build offline against Debian's golang-github-vmware-govmomi-dev (GOPATH mode):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o wfp-vcsim .
//
// It prints one line "VCSIM_READY {json}" on stdout when it serves requests,
// and stops cleanly on SIGTERM/SIGINT, or (with -watch-stdin) when stdin
// reaches EOF, so it dies with the test process that started it.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// guestBehaviour says how the simulated guest of a VM (and of its clones) acts.
type guestBehaviour struct {
	// IPs handed out on successive boots/reverts (like DHCP); empty: never an IP.
	IPs []string `json:"ips"`
	// Delay from power-on (or revert) to Tools running; negative: never.
	ToolsDelayMs int `json:"tools_delay_ms"`
	// Delay from Tools running to the IP being reported.
	IPDelayMs int `json:"ip_delay_ms"`
}

type templateSpec struct {
	Name        string            `json:"name"`
	GuestID     string            `json:"guest_id"`
	Firmware    string            `json:"firmware"` // "efi" or "bios"
	SecureBoot  bool              `json:"secure_boot"`
	Snapshot    string            `json:"snapshot"`
	AsTemplate  *bool             `json:"as_template"`
	ExtraConfig map[string]string `json:"extra_config"`
	// FailClone: a vSphere fault name; every CloneVM_Task of this template fails with it.
	FailClone string          `json:"fail_clone"`
	Guest     *guestBehaviour `json:"guest"`
}

type inventoryConfig struct {
	Folder    string          `json:"folder"`
	Templates []templateSpec  `json:"templates"`
	Default   *guestBehaviour `json:"default_guest"`
}

// ---------------------------------------------------------------------------
// Guest agent: watches the registry and plays the part of VMware Tools.

type vmState struct {
	gen   int // bumped on every power/revert event so stale timers do nothing
	boots int
	b     *guestBehaviour
}

type guestAgent struct {
	mu       sync.Mutex
	vms      map[types.ManagedObjectReference]*vmState
	byTmpl   map[types.ManagedObjectReference]*guestBehaviour
	fallback *guestBehaviour
}

func (a *guestAgent) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "WfpGuestAgent", Value: "wfp-guest-agent"}
}

func (a *guestAgent) PutObject(mo.Reference) {}

func (a *guestAgent) RemoveObject(ref types.ManagedObjectReference) {
	a.mu.Lock()
	delete(a.vms, ref)
	a.mu.Unlock()
}

func (a *guestAgent) state(ref types.ManagedObjectReference) *vmState {
	s, ok := a.vms[ref]
	if !ok {
		b := a.byTmpl[ref]
		if b == nil {
			b = a.fallback
		}
		s = &vmState{b: b}
		a.vms[ref] = s
	}
	return s
}

// UpdateObject runs inside Map.Update.  Guest "down" transitions are applied
// synchronously, so a client never reads the old Tools state or IP after a
// power-off or revert task completes; "up" transitions are timers.
func (a *guestAgent) UpdateObject(obj mo.Reference, changes []types.PropertyChange) {
	switch o := obj.(type) {
	case *mo.VirtualMachine:
		for _, c := range changes {
			if c.Name == "runtime.powerState" {
				on := fmt.Sprint(c.Val) == string(types.VirtualMachinePowerStatePoweredOn)
				a.event(o.Self, on, true) // the SOAP dispatcher holds this VM's lock
			}
		}
	case *mo.Task:
		if o.Info.State != types.TaskInfoStateSuccess || o.Info.Entity == nil {
			return
		}
		switch o.Info.DescriptionId {
		case "VirtualMachine.cloneVm":
			// The clone behaves like its template's guest.
			if ref, ok := o.Info.Result.(types.ManagedObjectReference); ok {
				a.mu.Lock()
				if b := a.byTmpl[*o.Info.Entity]; b != nil {
					a.state(ref).b = b
				}
				a.mu.Unlock()
			}
		case "VirtualMachineSnapshot.revertToSnapshot":
			// The dispatcher holds the snapshot's lock, not the VM's.
			if snap, ok := simulator.Map.Get(*o.Info.Entity).(*simulator.VirtualMachineSnapshot); ok {
				if vm, ok := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine); ok {
					simulator.Map.WithLock(vm, func() { a.revert(vm) })
				}
			}
		case "VirtualMachine.revertToCurrentSnapshot":
			if vm, ok := simulator.Map.Get(*o.Info.Entity).(*simulator.VirtualMachine); ok {
				a.revert(vm) // the dispatcher holds this VM's lock
			}
		}
	}
}

// revert restarts the guest (caller holds the VM lock): Tools and the IP go
// away and come back, possibly with a new IP.
func (a *guestAgent) revert(vm *simulator.VirtualMachine) {
	a.event(vm.Self, vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn, true)
}

func (a *guestAgent) event(ref types.ManagedObjectReference, on bool, locked bool) {
	a.mu.Lock()
	s := a.state(ref)
	s.gen++
	gen := s.gen
	b := s.b
	ip := ""
	if on && len(b.IPs) > 0 {
		ip = b.IPs[s.boots%len(b.IPs)]
		s.boots++
	}
	a.mu.Unlock()

	a.apply(ref, gen, false, "", locked)
	if !on || b.ToolsDelayMs < 0 {
		return
	}
	time.AfterFunc(time.Duration(b.ToolsDelayMs)*time.Millisecond, func() {
		a.apply(ref, gen, true, "", false)
		if ip != "" {
			time.AfterFunc(time.Duration(b.IPDelayMs)*time.Millisecond, func() { a.apply(ref, gen, true, ip, false) })
		}
	})
}

// apply sets the guest properties unless a newer event superseded this one.
// locked: the caller already holds the VM's registry lock.
func (a *guestAgent) apply(ref types.ManagedObjectReference, gen int, tools bool, ip string, locked bool) {
	obj, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	running := string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning)
	status := types.VirtualMachineToolsStatusToolsNotRunning
	guestState := "notRunning"
	if tools {
		running = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
		status = types.VirtualMachineToolsStatusToolsOk
		guestState = "running"
	}
	var nics []types.GuestNicInfo
	if ip != "" {
		nics = []types.GuestNicInfo{{
			Network: "VM Network", Connected: true, DeviceConfigId: 4000,
			MacAddress: "00:50:56:00:00:01", IpAddress: []string{ip},
		}}
	}
	update := func() {
		a.mu.Lock()
		stale := a.vms[ref] == nil || a.vms[ref].gen != gen
		a.mu.Unlock()
		if stale {
			return
		}
		simulator.Map.Update(obj, []types.PropertyChange{
			{Name: "guest.toolsRunningStatus", Val: running},
			{Name: "guest.toolsStatus", Val: status},
			{Name: "guest.toolsVersion", Val: "12352"},
			{Name: "guest.guestState", Val: guestState},
			{Name: "guest.ipAddress", Val: ip},
			{Name: "guest.net", Val: nics},
			{Name: "summary.guest.toolsRunningStatus", Val: running},
			{Name: "summary.guest.toolsStatus", Val: status},
			{Name: "summary.guest.ipAddress", Val: ip},
		})
	}
	if locked {
		update()
	} else {
		simulator.Map.WithLock(obj, update)
	}
}

// ---------------------------------------------------------------------------
// Fault injection: a template whose clones always fail with a named fault.

// The VM is embedded by value: the property collector digs through embedded
// structs (not pointers) to find the mo.VirtualMachine it serves.
type failingTemplate struct {
	simulator.VirtualMachine
	fault string
}

func namedFault(name string) types.BaseMethodFault {
	switch name {
	case "NoDiskSpace":
		return &types.NoDiskSpace{Datastore: "LocalDS_0"}
	case "InsufficientResourcesFault":
		return &types.InsufficientResourcesFault{}
	case "FileLocked":
		return &types.FileLocked{}
	case "TaskInProgress":
		return &types.TaskInProgress{}
	default:
		return &types.SystemError{Reason: "fault injected by wfp-vcsim: " + name}
	}
}

func (t *failingTemplate) CloneVMTask(ctx *simulator.Context, req *types.CloneVM_Task) soap.HasFault {
	task := simulator.CreateTask(&t.VirtualMachine, "cloneVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, namedFault(t.fault)
	})
	return &methods.CloneVM_TaskBody{Res: &types.CloneVM_TaskResponse{Returnval: task.Run()}}
}

// ---------------------------------------------------------------------------
// Inventory

func buildInventory(ctx context.Context, c *vim25.Client, cfg *inventoryConfig, agent *guestAgent) error {
	finder := find.NewFinder(c, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	if cfg.Folder != "" {
		if _, err := folders.VmFolder.CreateFolder(ctx, cfg.Folder); err != nil {
			return err
		}
	}
	pool, err := finder.DefaultResourcePool(ctx)
	if err != nil {
		return err
	}
	ds, err := finder.DefaultDatastore(ctx)
	if err != nil {
		return err
	}

	for _, t := range cfg.Templates {
		spec := types.VirtualMachineConfigSpec{
			Name:     t.Name,
			GuestId:  t.GuestID,
			Firmware: t.Firmware,
			NumCPUs:  2,
			MemoryMB: 4096,
			Files:    &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s]", ds.Name())},
			BootOptions: &types.VirtualMachineBootOptions{
				EfiSecureBootEnabled: types.NewBool(t.SecureBoot),
			},
			Annotation: "WFP harness guest template " + t.Name,
		}
		for k, v := range t.ExtraConfig {
			spec.ExtraConfig = append(spec.ExtraConfig, &types.OptionValue{Key: k, Value: v})
		}
		task, err := folders.VmFolder.CreateVM(ctx, spec, pool, nil)
		if err != nil {
			return err
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			return fmt.Errorf("create %s: %w", t.Name, err)
		}
		vm := object.NewVirtualMachine(c, info.Result.(types.ManagedObjectReference))
		if t.Snapshot != "" {
			st, err := vm.CreateSnapshot(ctx, t.Snapshot, "clean image for test clones", false, false)
			if err != nil {
				return err
			}
			if err := st.Wait(ctx); err != nil {
				return fmt.Errorf("snapshot %s: %w", t.Name, err)
			}
		}
		if t.AsTemplate == nil || *t.AsTemplate {
			if err := vm.MarkAsTemplate(ctx); err != nil {
				return fmt.Errorf("mark %s as template: %w", t.Name, err)
			}
		}
		b := t.Guest
		if b == nil {
			b = agent.fallback
		}
		agent.byTmpl[vm.Reference()] = b
		if t.FailClone != "" {
			sim := simulator.Map.Get(vm.Reference()).(*simulator.VirtualMachine)
			// Same Self, so the registry dispatches this VM's methods to the wrapper.
			simulator.Map.Put(&failingTemplate{VirtualMachine: *sim, fault: t.FailClone})
		}
	}
	return nil
}

func loadConfig(path, names, folder string) (*inventoryConfig, error) {
	cfg := &inventoryConfig{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	for _, n := range strings.Split(names, ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.Templates = append(cfg.Templates, templateSpec{Name: n})
		}
	}
	if cfg.Folder == "" {
		cfg.Folder = folder
	}
	if cfg.Default == nil {
		cfg.Default = &guestBehaviour{IPs: []string{"127.0.0.1"}, ToolsDelayMs: 100, IPDelayMs: 100}
	}
	for i := range cfg.Templates {
		t := &cfg.Templates[i]
		if t.GuestID == "" {
			t.GuestID = string(types.VirtualMachineGuestOsIdentifierWindows9Server64Guest)
		}
		if t.Firmware == "" {
			t.Firmware = string(types.GuestOsDescriptorFirmwareTypeEfi)
		}
		if t.Snapshot == "" {
			t.Snapshot = "baseline"
		}
	}
	return cfg, nil
}

func main() {
	listen := flag.String("l", "127.0.0.1:0", "listen address (port 0: random)")
	certFile := flag.String("tlscert", "", "PEM server certificate (chain) file; required")
	keyFile := flag.String("tlskey", "", "PEM private key file; required")
	username := flag.String("username", "user", "the only user name accepted by Login")
	passwordEnv := flag.String("password-env", "VCSIM_PASSWORD", "environment variable holding the only password accepted by Login")
	configFile := flag.String("config", "", "JSON inventory file (templates, guest behaviour, faults)")
	templates := flag.String("templates", "", "comma-separated template names, added to those of -config")
	folder := flag.String("folder", "wfp-ci", "VM folder created under the datacenter's vm folder")
	trace := flag.Bool("trace", false, "log SOAP traffic to stderr (includes the Login password: tests only)")
	watchStdin := flag.Bool("watch-stdin", false, "exit when stdin reaches EOF (the parent process went away)")
	flag.Parse()

	// Catch signals before anything else, so a SIGTERM sent as soon as the
	// ready line appears still takes the clean shutdown path.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	log.SetOutput(os.Stderr)
	if *certFile == "" || *keyFile == "" {
		log.Fatal("-tlscert and -tlskey are required: this simulator only serves TLS")
	}
	password := os.Getenv(*passwordEnv)
	if password == "" {
		log.Fatalf("environment variable %s is empty", *passwordEnv)
	}
	cfg, err := loadConfig(*configFile, *templates, *folder)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatal(err)
	}
	if *trace {
		simulator.Trace = true
	}

	model := simulator.VPX()
	model.Host = 0        // no standalone host: one cluster, like the lab
	model.ClusterHost = 1 // one ESXi host in the cluster
	model.Machine = 0     // only our templates
	model.Pool = 1        // a child resource pool besides "Resources"
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove() // deletes the datastore temp dirs

	agent := &guestAgent{
		vms:      map[types.ManagedObjectReference]*vmState{},
		byTmpl:   map[types.ManagedObjectReference]*guestBehaviour{},
		fallback: cfg.Default,
	}
	ctx := context.Background()
	// In-process client (internal session): build the inventory before serving.
	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		log.Fatal(err)
	}
	if err := buildInventory(ctx, client, cfg, agent); err != nil {
		log.Fatal(err)
	}
	simulator.Map.AddHandler(agent)

	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, password)}
	server := model.Service.NewServer()

	u := *server.URL
	u.User = nil // the ready line carries no credentials
	sum := sha256.Sum256(cert.Certificate[0])
	hexes := make([]string, len(sum))
	for i, b := range sum {
		hexes[i] = fmt.Sprintf("%02X", b)
	}
	names := make([]string, 0, len(cfg.Templates))
	for _, t := range cfg.Templates {
		names = append(names, t.Name)
	}
	ready, _ := json.Marshal(map[string]interface{}{
		"url":               u.String(),
		"thumbprint_sha256": strings.Join(hexes, ":"),
		"pid":               os.Getpid(),
		"templates":         names,
	})
	fmt.Printf("VCSIM_READY %s\n", ready)
	os.Stdout.Sync()

	done := make(chan string, 2)
	go func() { done <- (<-sigs).String() }()
	if *watchStdin {
		go func() {
			// The parent keeps our stdin open; EOF means it went away (even if SIGKILLed).
			_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
			done <- "stdin closed"
		}()
	}
	why := <-done
	server.Close()
	log.Printf("wfp-vcsim: stopped (%s)", why)
}
